"""Form answers as people read them.

The intake records the raw form fields (`answers`: field name -> list of strings) and, when a
questionnaire checked them, a self-describing record (`questionnaire.answers`: key, type, the
English question, the value). Values are strings, lists, flat objects (consent, dates), booleans
or null; keys/manifest.py bounds their nesting, and `answer_text` stops at MAX_DEPTH anyway.
"""

from __future__ import annotations

from typing import Any

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
