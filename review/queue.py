"""The investigator's queue: which submissions to read first, as small I/O-free functions.

The workbench (review/workbench.py) and `list --sort` both sort and filter with these, over the
records the vault state keeps; nothing here decrypts or writes. A submission's `triage` record
(urgency, groups at risk, consented uses) is taken from the questionnaire's structured answers
when it is imported (review/content.py `summary`), so sorting 10,000 submissions by urgency
decrypts nothing.

Every value in a record came from a signed bundle that a compromised server could have crafted:
an urgency that is no option of the questionnaire sorts with the unanswered, a field of the wrong
shape counts as not given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keys.manifest import IntakeManifest
from review.duplicates import find_matches
from review.metadata import warnings
from review.state import ReplyRecord, SubmissionRecord, Triage

# The questionnaire's urgency options, most urgent first ("Do you expect to be arrested or
# deported soon?": within days, within weeks, I do not know, no). Not answered comes last.
URGENCY_KEY = "urgency"
GROUPS_KEY = "groups"
URGENCY_ORDER = ("days", "weeks", "unsure", "no")
_UNANSWERED = len(URGENCY_ORDER)
SORTS = ("urgency", "day")
Sort = Literal["urgency", "day"]
MAX_TRIAGE_ITEMS = 16  # a crafted record cannot make a row carry thousands of values


def triage(intake: IntakeManifest) -> Triage:
    """What the queue shows of one submission's answers: its urgency, the groups at risk and
    the uses its source consented to (option values; labels come from the questionnaire)."""
    record = intake.questionnaire or {}
    items = record.get("answers")
    urgency: str | None = None
    groups: list[str] = []
    consent: list[str] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        key, value = item.get("key"), item.get("value")
        if key == URGENCY_KEY and isinstance(value, str):
            urgency = value
        elif key == GROUPS_KEY:
            groups = _strings(value if isinstance(value, list) else [value])
        elif item.get("type") == "consent" and isinstance(value, dict):
            consent += [k for k, v in value.items() if v is True and isinstance(k, str)]
    return {"urgency": urgency, "groups": groups[:MAX_TRIAGE_ITEMS],
            "consent": list(dict.fromkeys(consent))[:MAX_TRIAGE_ITEMS]}


def _strings(values: Iterable[object]) -> list[str]:
    return list(dict.fromkeys(v for v in values if isinstance(v, str)))


def urgency_rank(value: object) -> int:
    """0 for the most urgent answer; unanswered and unknown values last."""
    return URGENCY_ORDER.index(value) if value in URGENCY_ORDER else _UNANSWERED


@dataclass(frozen=True)
class Row:
    """One submission as the queue shows it (values as recorded; the UI labels them)."""

    id: str
    day: str
    source: str
    urgency: str | None
    groups: tuple[str, ...]
    consent: tuple[str, ...]
    tags: tuple[str, ...]
    replied: bool
    duplicates: tuple[str, ...]  # other submissions that carry the very same file
    similar: tuple[str, ...]  # other submissions with a photo that looks the same
    metadata: tuple[str, ...]  # kinds of identifying metadata found: gps, device, author, ...
    excerpt: str
    state: str  # "" (readable), "sealed" (not for this key) or "quarantined"

    @property
    def warnings(self) -> tuple[str, ...]:
        dup = ("duplicate",) if self.duplicates else ()
        similar = ("similar",) if self.similar else ()
        return (*dup, *similar, *self.metadata)


def rows(submissions: Iterable[SubmissionRecord], replies: Iterable[ReplyRecord],
         ) -> list[Row]:
    """A row per submission. A submission counts as replied to when a reply went to its source
    on or after the day it arrived (days are all the vault keeps)."""
    last_reply: dict[str, str] = {}
    for reply in replies:
        source, day = str(reply.get("source", "")), str(reply.get("day", ""))
        last_reply[source] = max(day, last_reply.get(source, ""))
    subs = list(submissions)
    matches = find_matches(subs)
    return [_row(sub, last_reply, matches.of(str(sub["id"]))) for sub in subs]


def _row(sub: SubmissionRecord, last_reply: Mapping[str, str],
         matches: Mapping[str, list[str]]) -> Row:
    found = sub.get("triage")
    t: Mapping[str, Any] = found if isinstance(found, dict) else {}
    urgency = t.get("urgency")
    day, source = str(sub.get("day", "")), str(sub.get("source", ""))
    state = ("sealed" if not sub.get("readable", True)
             else "quarantined" if sub.get("quarantine") else "")
    return Row(
        id=str(sub["id"]), day=day, source=source,
        urgency=urgency if isinstance(urgency, str) else None,
        groups=tuple(_strings(_list(t.get("groups")))),
        consent=tuple(_strings(_list(t.get("consent")))),
        tags=tuple(_strings(_list(sub.get("tags")))),
        replied=source in last_reply and last_reply[source] >= day,
        duplicates=tuple(matches["duplicates"][:MAX_TRIAGE_ITEMS]),
        similar=tuple(matches["similar"][:MAX_TRIAGE_ITEMS]),
        metadata=tuple(warnings(sub)),
        excerpt=str(sub.get("excerpt", "")),
        state=state,
    )


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def sort_rows(items: Sequence[Row], by: Sort = "urgency") -> list[Row]:
    """By urgency (most urgent first), then day (oldest first: it has waited longest), then id;
    or by day then id."""
    if by == "day":
        return sorted(items, key=lambda r: (r.day, r.id))
    return sorted(items, key=lambda r: (urgency_rank(r.urgency), r.day, r.id))


@dataclass(frozen=True)
class Filter:
    """What the queue shows: every given condition must hold. `text` matches the id, source,
    day, tags and excerpt, or the ids a full-text search found (`hits`)."""

    tag: str | None = None
    urgency: str | None = None
    consent: str | None = None
    text: str = ""

    @property
    def empty(self) -> bool:
        return not (self.tag or self.urgency or self.consent or self.text)


def parse_filter(query: str) -> Filter:
    """`tag:X urgency:days consent:advocacy free words` -> a Filter (the last of each wins;
    `urgency:none` asks for the unanswered)."""
    given: dict[str, str] = {}
    words = []
    for word in query.split():
        name, sep, value = word.partition(":")
        if sep and name.lower() in ("tag", "urgency", "consent") and value:
            given[name.lower()] = value
        else:
            words.append(word)
    return Filter(given.get("tag"), given.get("urgency"), given.get("consent"), " ".join(words))


def matches(row: Row, wanted: Filter, hits: frozenset[str] | None = None) -> bool:
    if wanted.tag is not None and wanted.tag not in row.tags:
        return False
    if wanted.urgency is not None:
        expected = None if wanted.urgency == "none" else wanted.urgency
        if (row.urgency if row.urgency in URGENCY_ORDER else None) != expected:
            return False
    if wanted.consent is not None and wanted.consent not in row.consent:
        return False
    if wanted.text:
        needle = wanted.text.casefold()
        haystack = " ".join((row.id, row.source, row.day, *row.tags, row.excerpt)).casefold()
        return needle in haystack or (hits is not None and row.id in hits)
    return True


def select(items: Sequence[Row], wanted: Filter, by: Sort = "urgency",
           hits: frozenset[str] | None = None) -> list[Row]:
    """The queue as shown: filtered, then sorted."""
    return sort_rows([r for r in items if matches(r, wanted, hits)], by)
