"""What a source agreed their testimony may be used for, and whether an export may go ahead.

The questionnaire's consent field (type `consent`, dropbox/questionnaires/default.toml) has one
box per use: anonymized advocacy, referral to UNHCR or resettlement partners, legal proceedings.
The intake records the ticked boxes in the submission's questionnaire record, which names each
answer's type, so this reads them without the questionnaire file. Pure.
"""

from __future__ import annotations

from keys.errors import InputError
from keys.manifest import IntakeManifest

PURPOSES = ("advocacy", "referral", "legal")
# The purposes whose exports carry working copies cleaned of metadata by default: what leaves
# for advocacy must not say where a photo was taken or who wrote a document.
CLEANED_BY_DEFAULT = frozenset({"advocacy"})


class ConsentError(InputError):
    """An export for a purpose some of its submissions' sources did not consent to."""


def consents(intake: IntakeManifest) -> list[str]:
    """The purposes ticked in any consent field of this submission, in PURPOSES order."""
    items = (intake.questionnaire or {}).get("answers")
    ticked: set[str] = set()
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "consent":
            value = item.get("value")
            if isinstance(value, dict):
                ticked |= {str(k) for k, v in value.items() if v is True}
    return [p for p in PURPOSES if p in ticked]


def check_export(purpose: str, given: dict[str, list[str]], override: str | None) -> list[str]:
    """The ids among `given` (id -> consents) whose sources did not consent to `purpose`.
    Raises ConsentError unless an override reason is given; returns them for the record."""
    if purpose not in PURPOSES:
        raise ConsentError(f"unknown purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    missing = sorted(sid for sid, ticked in given.items() if purpose not in ticked)
    reason = (override or "").strip()
    if missing and not reason:
        raise ConsentError(
            f"the source did not consent to {purpose} for {', '.join(missing)}: nothing was "
            "exported (leave them out, or give --override-consent REASON, which is recorded "
            "in the custody log and the summary)"
        )
    return missing
