"""Form answers as people read them.

The intake records the raw form fields (`answers`: field name -> list of strings) and, when a
questionnaire checked them, a self-describing record (`questionnaire.answers`: key, type, the
English question, the value). Values can be strings, lists, consent dicts or null.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keys.errors import InputError


def answer_text(value: Any) -> str:
    """Any answer value as plain text (lists one per line, dicts as `key: value`)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(answer_text(v) for v in value)
    if isinstance(value, dict):
        return "\n".join(f"{k}: {answer_text(v)}" for k, v in value.items())
    return str(value)


def answer_pairs(submission: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per answer: the questionnaire's questions when the intake recorded them,
    otherwise the raw form field names."""
    record = submission.get("questionnaire") or {}
    items = record.get("answers") if isinstance(record, dict) else None
    if isinstance(items, list) and items:
        return [
            (str(a.get("question") or a.get("key")), answer_text(a.get("value")))
            for a in items
            if isinstance(a, dict)
        ]
    return [(str(k), answer_text(v)) for k, v in submission.get("answers", {}).items()]


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
