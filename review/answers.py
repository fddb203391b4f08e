"""Form answers as people read them.

The intake records the raw form fields (`answers`: field name -> list of strings) and, when a
questionnaire checked them, a self-describing record (`questionnaire.answers`: key, type, the
English question, the value). Values can be strings, lists, consent dicts or null.
"""

from __future__ import annotations

from typing import Any


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
