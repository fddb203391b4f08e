"""What the workbench shows, as Rich text: the queue's cells, one submission, one source.

Everything a source wrote, and every value a signed bundle carries, is untrusted: it reaches the
screen only as plain `Text` (never parsed as markup) after keys.sanitize.clean has removed
terminal controls and bidi overrides. Right-to-left text is passed in logical order: a bidi-aware
terminal (VTE, Konsole, mlterm) lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.text import Text

from keys.sanitize import clean, one_line
from review.answers import QuestionnaireLabels, labelled_answers
from review.content import Attachment, Content
from review.metadata import by_ciphertext
from review.queue import URGENCY_KEY, Row
from review.state import ReplyRecord, SubmissionRecord

# (title, width): fixed widths, so the table never measures 10,000 rows to lay out its columns;
# `cells` cuts every value to its column's width.
COLUMNS = (("day", 10), ("urgency", 22), ("groups at risk", 28), ("consent", 26), ("tags", 20),
           ("reply", 5), ("warnings", 22), ("excerpt", 60))


OptionLabels = Mapping[str, Mapping[str, str]]  # field key -> option value -> label


def option_labels(labels: QuestionnaireLabels) -> OptionLabels:
    """The labels' options as lookups, made once per redraw rather than once per cell."""
    return {key: dict(options) for key, options in labels.options.items()}


def cells(row: Row, options: OptionLabels) -> list[Text]:
    """One queue row's cells, in COLUMNS order and widths."""
    urgencies, groups_of = options.get(URGENCY_KEY, {}), options.get("groups", {})
    urgency = urgencies.get(row.urgency, row.urgency) if row.urgency else "—"
    groups = ", ".join(groups_of.get(g, g) for g in row.groups) or "—"
    if row.state == "sealed":
        excerpt = "(not encrypted to your key)"
    elif row.state == "quarantined":
        excerpt = "(quarantined)"
    else:
        excerpt = row.excerpt
    warn = ", ".join(row.warnings)
    return [
        Text(row.day),
        Text(one_line(urgency, 22), style="bold #ff5f5f" if row.urgency == "days" else ""),
        Text(one_line(groups, 28)),
        Text(one_line(", ".join(row.consent) or "—", 26)),
        Text(one_line(", ".join(row.tags), 20)),
        Text("sent" if row.replied else ""),
        Text(one_line(warn, 22), style="bold #ffd75f" if warn else ""),
        Text(one_line(excerpt, 60)),
    ]


def _heading(out: Text, title: str) -> None:
    out.append(f"\n{title}\n", style="bold underline")


def _block(out: Text, text: str, indent: str = "  ") -> None:
    for line in clean(text).split("\n"):
        out.append(f"{indent}{line}\n")


def submission_text(
    sub: SubmissionRecord,
    content: Content | None,
    labels: QuestionnaireLabels,
    replies: Sequence[tuple[ReplyRecord, str | None]],
    row: Row,
) -> Text:
    """The submission view: header, message, labelled answers, attachments with their findings,
    notes and the replies sent to its source."""
    out = Text()
    out.append(f"submission {clean(sub['id'], single_line=True)}\n", style="bold")
    out.append(f"day {sub['day']}  ·  source {clean(sub['source'], single_line=True)}  ·  "
               f"tags {one_line(', '.join(sub['tags']), 120) or '—'}\n")
    if row.duplicates:
        out.append(f"same file as: {one_line(', '.join(row.duplicates), 200)}\n",
                   style="bold yellow")
    if row.similar:
        out.append(f"a similar photo in: {one_line(', '.join(row.similar), 200)}\n",
                   style="bold yellow")
    if sub.get("quarantine"):
        out.append(f"QUARANTINED: {clean(str(sub['quarantine']), single_line=True)}\n",
                   style="bold red")
    elif content is None:
        out.append("(this submission was not encrypted to your key)\n")
    else:
        _content(out, sub, content, labels)
    if sub["notes"]:
        _heading(out, "notes")
        for note in sub["notes"]:
            out.append(f"  {note['at']} {clean(note['by'], single_line=True)}:\n", style="italic")
            _block(out, note["text"], "      ")
    _replies(out, replies)
    return out


def _content(out: Text, sub: SubmissionRecord, content: Content,
             labels: QuestionnaireLabels) -> None:
    _heading(out, "message")
    _block(out, content.message or "(no message)")
    _heading(out, f"answers ({labels.locale})")
    for question, answer in labelled_answers(content.intake, labels):
        out.append(f"  {clean(question, single_line=True)}\n", style="bold")
        _block(out, answer or "—", "      ")
    _heading(out, "attachments")
    if not content.attachments:
        out.append("  (none)\n")
    for att in content.attachments:
        out.append(f"  {one_line(att['name'], 80)}", style="bold")
        out.append(f"  {att['size']} bytes  {clean(att['content_type'], single_line=True)}\n")
        out.append(f"      sha256 {att['sha256']}\n")
        for finding in _findings(sub, att):
            out.append(f"      ⚠ {finding}\n", style="bold yellow")


def _findings(sub: SubmissionRecord, att: Attachment) -> list[str]:
    """The metadata found in one attachment on import (review/metadata.py), if any."""
    meta: Mapping[str, object] = by_ciphertext(sub).get(att["ciphertext"]["name"], {})
    return [f"{clean(str(k), single_line=True)}: {one_line(_flat(v), 100)}"
            for k, v in meta.items() if v]


def _flat(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    return str(value)


def _replies(out: Text, replies: Sequence[tuple[ReplyRecord, str | None]]) -> None:
    if not replies:
        return
    _heading(out, "replies sent to this source")
    for reply, text in replies:
        out.append(f"  {reply['day']} {clean(str(reply['by']), single_line=True)}:\n",
                   style="italic")
        _block(out, "(not encrypted to your key)" if text is None else text, "      ")


def source_text(
    source: str,
    subs: Sequence[SubmissionRecord],
    replies: Sequence[tuple[ReplyRecord, str | None]],
) -> Text:
    """One source's conversation: submissions and replies in the order of their days (a
    submission before a reply of the same day: a reply answers what came)."""
    out = Text()
    out.append(f"source {clean(source, single_line=True)}: {len(subs)} submission(s), "
               f"{len(replies)} reply(ies)\n", style="bold")
    events: list[tuple[str, int, Text]] = []
    for sub in subs:
        line = Text(f"{sub['day']}  ▶ submission {clean(sub['id'], single_line=True)}  ")
        line.append(one_line(str(sub.get("excerpt", "")), 70))
        events.append((str(sub["day"]), 0, line))
    for reply, text in replies:
        line = Text(f"{reply['day']}  ◀ reply by {clean(str(reply['by']), single_line=True)}: ",
                    style="cyan")
        line.append(one_line("(not encrypted to your key)" if text is None else text, 70))
        events.append((str(reply["day"]), 1, line))
    for _, _, line in sorted(events, key=lambda e: (e[0], e[1])):
        out.append_text(line)
        out.append("\n")
    return out
