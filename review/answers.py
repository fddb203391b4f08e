"""Form answers as people read them.

The intake records the raw form fields (`answers`: field name -> list of strings) and, when a
questionnaire checked them, a self-describing record (`questionnaire.answers`: key, type, the
English question, the value). Values are strings, lists, flat objects (consent, dates), booleans
or null; keys/manifest.py bounds their nesting, and `answer_text` stops at MAX_DEPTH anyway.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.errors import InputError
from keys.manifest import IntakeManifest

MAX_DEPTH = 4


def answer_text(value: Any, depth: int = MAX_DEPTH) -> str:
    """Any answer value as plain text (lists one per line, dicts as `key: value`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if depth <= 0:
        return "…"
    if isinstance(value, list):
        return "\n".join(answer_text(v, depth - 1) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {answer_text(v, depth - 1)}" for k, v in value.items())
    return str(value)


def answer_pairs(intake: IntakeManifest) -> list[tuple[str, str]]:
    """(label, text) per answer: the questionnaire's questions when the intake recorded them,
    otherwise the raw form field names."""
    items = (intake.questionnaire or {}).get("answers")
    if items:
        return [(str(a["question"] or a["key"]), answer_text(a["value"])) for a in items]
    return [(k, answer_text(v)) for k, v in intake.answers.items()]


# --- the questionnaire's own labels, in the reader's language --------------------------------

DEFAULT_QUESTIONNAIRE = (
    Path(__file__).resolve().parent.parent / "dropbox" / "questionnaires" / "default.toml"
)


class QuestionnaireFileError(InputError):
    """The questionnaire file for labels is missing or not of the expected shape."""


@dataclass(frozen=True)
class QuestionnaireLabels:
    """A questionnaire file's questions and answer options in one language. Read with tomllib
    from the file the server runs with (review/ never imports dropbox/): an answer record names
    a field by key and a choice by option value; these give them their words."""

    locale: str
    types: Mapping[str, str]  # field key -> type
    questions: Mapping[str, str]  # field key -> question
    options: Mapping[str, tuple[tuple[str, str], ...]]  # field key -> (value, label), in order

    def option_values(self, key: str) -> set[str]:
        return {value for value, _ in self.options.get(key, ())}


def _localized(texts: object, locale: str) -> str:
    """A [field.label]-style table's text in `locale`, else its language, else English (the
    server's own rule, dropbox.questionnaire.Localized.text)."""
    if not isinstance(texts, dict) or not texts:
        raise QuestionnaireFileError("a label is not a table of texts per language")
    for candidate in (locale, locale.split("_", 1)[0], "en"):
        if isinstance(texts.get(candidate), str):
            return str(texts[candidate])
    return str(next(iter(texts.values())))


def questionnaire_labels(path: Path | None, locale: str) -> QuestionnaireLabels:
    path = path or DEFAULT_QUESTIONNAIRE
    try:
        document = tomllib.loads(path.read_text("utf-8"))
        fields = [f for f in document["field"] if isinstance(f, dict)]
        types = {str(f["key"]): str(f["type"]) for f in fields}
        questions = {str(f["key"]): _localized(f["label"], locale) for f in fields}
        options = {
            str(f["key"]): tuple(
                (str(o["value"]), _localized(o["label"], locale)) for o in f.get("option", [])
            )
            for f in fields
        }
    except OSError as exc:
        raise QuestionnaireFileError(f"cannot read questionnaire {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise QuestionnaireFileError(f"questionnaire {path} is malformed: {exc!r}") from None
    return QuestionnaireLabels(locale, types, questions, options)


def labelled_answers(intake: IntakeManifest, labels: QuestionnaireLabels) -> list[tuple[str, str]]:
    """(question, answer) in the labels' language: choices by their option labels, consents as
    the uses agreed to (and not); a value that is no option is shown as given, marked. Falls back
    to `answer_pairs` when the intake recorded no questionnaire answers."""
    items = (intake.questionnaire or {}).get("answers")
    if not items:
        return answer_pairs(intake)
    return [
        (labels.questions.get(str(a["key"])) or str(a["question"] or a["key"]),
         _value_text(a["value"], dict(labels.options.get(str(a["key"]), ()))))
        for a in items
    ]


def _value_text(value: Any, options: Mapping[str, str]) -> str:
    if not options:
        return answer_text(value)
    if isinstance(value, dict):  # a consent: option -> ticked or not
        return "\n".join(
            f"{'✓' if ticked is True else '✗'} {_option(str(k), options)}"
            for k, ticked in value.items())
    chosen = value if isinstance(value, list) else [value]
    return "\n".join(_option(answer_text(v, 0), options) for v in chosen if v is not None)


def _option(value: str, options: Mapping[str, str]) -> str:
    return options.get(value) or f"{value} (not an option of this questionnaire)"
