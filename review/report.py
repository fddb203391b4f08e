"""`amanat-review report`: an anonymized advocacy report from the vault.

Only submissions whose source ticked "advocacy" in the questionnaire's consent question count.
Tables come from the questionnaire's choice answers alone (never free text, cities, names or
files), months stand in for days, and small counts are hidden (review.suppression). The folder
written holds report.html (self-contained, printable), report.csv (the same tables), one SVG
chart per table and SHA256SUMS; making it is a custody-log entry.

Every answer value is checked against the questionnaire's options before it is counted: a value
that is not one of them (a crafted-but-signed bundle can carry anything) counts as not answered
and is never shown.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypedDict

from keys.errors import InputError
from keys.files import replace_atomic
from review.answers import QuestionnaireLabels
from review.report_text import RTL, text
from review.state import SubmissionRecord
from review.suppression import determined, suppress
from review.vault import GENESIS, UnknownItemError, Vault, VaultIntegrityError, today

Key = tuple[str, ...]

# The dimensions: the month a submission was received, then questionnaire fields by key.
MONTH = "month"
FIELDS = ("province", "at_risk", "groups", "documents", "urgency")
CROSSES = (("province", MONTH), ("groups", "urgency"))
CONSENT_OPTION = "advocacy"
NONE = ""  # the category of "not answered" (and of values that are no option)
TOTAL = "*"
_DAY = re.compile(r"\d{4}-(0[1-9]|1[0-2])-\d{2}")


class ReportError(InputError):
    """The report cannot be made as asked (an output folder in use, an unknown field)."""


@dataclass(frozen=True)
class Table:
    """A grid of count keys for display. The last row and (crossed tables) the last column are
    totals. `lines` are the sums the grid publishes, for suppression."""

    id: str
    title: str
    corner: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Key, ...]], ...]
    crossed: bool

    def lines(self) -> list[list[Key]]:
        grid = [keys for _, keys in self.rows]
        columns = [list(col) for col in zip(*grid, strict=True)]
        return ([list(row) for row in grid] if self.crossed else []) + columns


@dataclass(frozen=True)
class Report:
    lang: str
    threshold: int
    tables: tuple[Table, ...]
    values: dict[Key, int]
    hidden: frozenset[Key]
    counts: dict[str, int]  # in_vault, in_period, counted, left_out

    def shown(self, key: Key) -> str:
        return f"< {self.threshold}" if key in self.hidden else str(self.values[key])


# --- reading submissions -----------------------------------------------------------------------


class AnswersRecord(TypedDict):
    """What a report reads of one submission: its day and its questionnaire record (from the
    decrypted submission manifest: a crafted bundle's values, checked where they are read)."""

    id: str
    day: str
    questionnaire: dict[str, Any] | None


def structured_answers(sub: AnswersRecord) -> dict[str, Any]:
    """The questionnaire record's values by field key (nothing else of the submission)."""
    record = sub.get("questionnaire")
    items = record.get("answers") if isinstance(record, dict) else None
    if not isinstance(items, list):
        return {}
    return {str(a["key"]): a.get("value") for a in items if isinstance(a, dict) and "key" in a}


def consented(answers: dict[str, Any], labels: QuestionnaireLabels) -> bool:
    return any(
        labels.types.get(key) == "consent"
        and isinstance(value, dict)
        and value.get(CONSENT_OPTION) is True
        for key, value in answers.items()
    )


def categories(sub: AnswersRecord, answers: dict[str, Any], labels: QuestionnaireLabels,
               ) -> dict[str, list[str]]:
    """Each dimension's categories for one submission: one for a single choice, any number
    for a multiple choice; [NONE] when nothing valid was answered."""
    day = str(sub.get("day", ""))
    found = {MONTH: [day[:7] if _DAY.fullmatch(day) else NONE]}
    for key in FIELDS:
        value = answers.get(key)  # a single choice is one string, a multiple choice a list
        chosen = value if isinstance(value, list) and not _single(key, labels) else [value]
        allowed = labels.option_values(key)
        valid = list(dict.fromkeys(v for v in chosen if isinstance(v, str) and v in allowed))
        found[key] = valid or [NONE]
    return found


def in_period(day: str, start: date | None, end: date | None) -> bool:
    return (start is None or day >= start.isoformat()) and (end is None or day <= end.isoformat())


# --- building the tables -----------------------------------------------------------------------


def _single(key: str, labels: QuestionnaireLabels) -> bool:
    return key == MONTH or labels.types.get(key) == "choice"


def _categories_of(key: str, labels: QuestionnaireLabels, seen: Iterable[str], lang: str,
                   ) -> list[tuple[str, str]]:
    if key == MONTH:
        months = sorted(m for m in set(seen) if m != NONE)
        return [(m, m) for m in months] + ([(NONE, text("not_answered", lang))]
                                           if NONE in seen else [])
    return [*labels.options[key], (NONE, text("not_answered", lang))]


def _title(key: str, labels: QuestionnaireLabels, lang: str) -> str:
    return text("month", lang) if key == MONTH else labels.questions[key]


def build_report(subs: Sequence[AnswersRecord], labels: QuestionnaireLabels, threshold: int,
                 counts: dict[str, int]) -> Report:
    """The tables over consented submissions (already chosen by the caller), suppressed."""
    lang = labels.locale
    for key in FIELDS:
        if labels.types.get(key) not in ("choice", "multichoice"):
            raise ReportError(f"the questionnaire has no choice question {key!r}")
    cats = [categories(s, structured_answers(s), labels) for s in subs]
    values: Counter[Key] = Counter()
    tables: list[Table] = []
    for key in (MONTH, *FIELDS):
        options = _categories_of(key, labels, (c for sub in cats for c in sub[key]), lang)
        for sub in cats:
            for c in sub[key]:
                values[(key, c)] += 1
                values[(key, TOTAL)] += 1
        total = text("total" if _single(key, labels) else "total_answers", lang)
        rows = [(label, ((key, value),)) for value, label in options]
        tables.append(Table(key, f"{text('by', lang)}: {_title(key, labels, lang)}",
                            _title(key, labels, lang), (text("count", lang),),
                            (*rows, (total, ((key, TOTAL),))), crossed=False))
    for first, second in CROSSES:
        tables.append(_cross(first, second, cats, labels, values))
    for table in tables:  # every key shown exists, zero when nobody gave that answer
        for _, keys in table.rows:
            for k in keys:
                values.setdefault(k, 0)
    # A one-key line says a total is an empty sum: only a table without categories (an empty
    # period) has one, and its zero tells nothing about anyone.
    lines = [line for table in tables for line in table.lines() if len(line) > 1]
    hidden = suppress(values, lines, threshold)
    if determined(values, lines, hidden):  # suppress() sees to it; checked before writing
        raise ReportError("small-cell suppression failed: a hidden count could be recovered")
    return Report(lang, threshold, tuple(tables), dict(values), frozenset(hidden), counts)


def _cross(first: str, second: str, cats: list[dict[str, list[str]]],
           labels: QuestionnaireLabels, values: Counter[Key]) -> Table:
    """first × second. A margin that equals a one-way table's count shares its key, so the
    suppression of linked tables is decided together."""
    lang, name = labels.locale, f"{first}×{second}"
    rows = _categories_of(first, labels, (c for s in cats for c in s[first]), lang)
    cols = _categories_of(second, labels, (c for s in cats for c in s[second]), lang)
    single1, single2 = _single(first, labels), _single(second, labels)

    def row_total(a: str) -> Key:  # with one answer per column, a row adds up to first's count
        return (first, a) if single2 else (name, "r", a)

    def col_total(b: str) -> Key:
        return (second, b) if single1 else (name, "c", b)

    grand: Key = (first, TOTAL) if single2 else (second, TOTAL) if single1 else (name, TOTAL)
    for sub in cats:
        for a in sub[first]:
            for b in sub[second]:
                values[(name, a, b)] += 1
                if not single2:
                    values[row_total(a)] += 1
                if not single1:
                    values[col_total(b)] += 1
                if not (single1 or single2):
                    values[grand] += 1
    grid: list[tuple[str, tuple[Key, ...]]] = [
        (label, (*((name, a, b) for b, _ in cols), row_total(a))) for a, label in rows]
    total = text("total", lang)
    grid.append((total, (*(col_total(b) for b, _ in cols), grand)))
    title = f"{_title(first, labels, lang)} × {_title(second, labels, lang)}"
    return Table(name, title, _title(first, labels, lang),
                 (*(label for _, label in cols), total), tuple(grid), crossed=True)


# --- writing -----------------------------------------------------------------------------------


def report_csv(report: Report) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["table", "row", "column", "count"])
    for table in report.tables:
        for label, keys in table.rows:
            for column, key in zip(table.columns, keys, strict=True):
                writer.writerow([table.title, label, column, report.shown(key)])
    return out.getvalue().encode("utf-8-sig")  # the BOM: spreadsheets read Arabic script right


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _table_html(report: Report, table: Table) -> str:
    head = "".join(f"<th scope='col'>{_e(c)}</th>" for c in table.columns)
    body = []
    for n, (label, keys) in enumerate(table.rows):
        cls = " class='total'" if n == len(table.rows) - 1 else ""
        cells = "".join(
            f"<td{' class=hidden' if k in report.hidden else ''}>{_e(report.shown(k))}</td>"
            for k in keys
        )
        body.append(f"<tr{cls}><th scope='row'>{_e(label)}</th>{cells}</tr>")
    return (f"<table><thead><tr><th scope='col'>{_e(table.corner)}</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


STYLE = """
body{font-family:"Noto Naskh Arabic","Noto Sans","DejaVu Sans",sans-serif;margin:2em;
color:#111;line-height:1.5;max-width:60em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;break-after:avoid}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #888;padding:.2em .5em;text-align:start}
td{text-align:right;direction:ltr;font-variant-numeric:tabular-nums}
thead th{background:#eee}tr.total th,tr.total td{font-weight:bold;border-top:2px solid #111}
td.hidden{color:#555;font-style:italic}
section{break-inside:avoid}figure{margin:.5em 0}
figure svg{max-width:100%;height:auto;direction:ltr}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dd{margin:0}
code{font-family:monospace;word-break:break-all;direction:ltr;unicode-bidi:isolate}
@page{margin:1.5cm}@media print{body{margin:0}}
"""

# Counts read left to right in every language ("< 5" too); a chart's text anchors are matplotlib's
# left-to-right layout, and each label is still shaped and ordered by the browser.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _method_html(report: Report, period: str, custody_head: str) -> str:
    lang, c = report.lang, report.counts
    rules = "".join(f"<li>{_e(text(k, lang, threshold=report.threshold))}</li>"
                    for k in ("rule_threshold", "rule_complementary", "rule_months"))
    facts = [("period", _e(period)), ("in_vault", c["in_vault"]), ("in_period", c["in_period"]),
             ("counted", c["counted"]), ("left_out", c["left_out"]),
             ("custody", f"<code>{_e(custody_head)}</code>"), ("made", _e(today()))]
    items = "".join(f"<dt>{_e(text(k, lang))}</dt><dd>{v}</dd>" for k, v in facts)
    return (f"<section id='method'><h2>{_e(text('method', lang))}</h2><ul>{rules}</ul>"
            f"<dl>{items}</dl></section>")


def report_html(report: Report, charts: dict[str, str], period: str, custody_head: str) -> bytes:
    lang = report.lang
    sections = "".join(
        f"<section id='{_e(t.id)}'><h2>{_e(t.title)}</h2>{_table_html(report, t)}"
        f"<figure>{charts[t.id]}</figure></section>"
        for t in report.tables
    )
    page = (
        f"<!DOCTYPE html><html lang='{_e(lang.replace('_', '-'))}' "
        f"dir='{'rtl' if lang in RTL else 'ltr'}'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<meta name='referrer' content='no-referrer'>"
        f"<title>{_e(text('title', lang))}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_e(text('title', lang))}</h1><p>{_e(text('intro', lang))}</p>"
        f"<p><strong>{_e(text('counted', lang))}: {report.counts['counted']}</strong> · "
        f"{_e(text('left_out', lang))}: {report.counts['left_out']}</p>"
        f"{sections}{_method_html(report, period, custody_head)}</body></html>\n"
    )
    return page.encode("utf-8")


@dataclass(frozen=True)
class ReportRequest:
    out: Path
    labels: QuestionnaireLabels
    threshold: int
    start: date | None = None
    end: date | None = None
    purpose: str = "anonymized advocacy report"


def choose(vault: Vault, request: ReportRequest) -> tuple[list[AnswersRecord], dict[str, int]]:
    """The consented submissions of the period and the vault's counts."""
    subs = list(vault.submissions.values())
    period = [s for s in subs if in_period(str(s.get("day", "")), request.start, request.end)]
    readable = [r for s in period if (r := _answers_record(vault, s)) is not None]
    chosen = [s for s in readable if consented(structured_answers(s), request.labels)]
    counts = {"in_vault": len(subs), "in_period": len(period), "counted": len(chosen),
              "left_out": len(period) - len(chosen)}
    return chosen, counts


def _answers_record(vault: Vault, sub: SubmissionRecord) -> AnswersRecord | None:
    """The submission's day and questionnaire record, read (and checked) from its encrypted
    content: the vault's state keeps no answers. None when it cannot be read or is quarantined:
    such a submission is left out, as one without consent is."""
    try:
        content = vault.content(sub)
    except (UnknownItemError, VaultIntegrityError):
        return None
    return {"id": sub["id"], "day": sub["day"], "questionnaire": content.intake.questionnaire}


def make_report(vault: Vault, request: ReportRequest) -> dict[str, str]:
    """Write the report folder and log it; returns each file's SHA-256 by name."""
    from review.report_charts import chart_svg, require_plotting  # loads matplotlib

    require_plotting()
    out = request.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReportError(f"{out} is not an empty folder: report writes a new one")
    chosen, counts = choose(vault, request)
    report = build_report(chosen, request.labels, request.threshold, counts)
    charts = {t.id: chart_svg(report, t) for t in report.tables}
    custody = vault.custody
    head = custody[-1]["hash"] if custody else GENESIS
    period = _period_text(request)
    files = {"report.html": report_html(report, {k: _inline(v) for k, v in charts.items()},
                                        period, head),
             "report.csv": report_csv(report)}
    files |= {f"chart-{n + 1:02d}-{t.id.replace('×', '-by-')}.svg": charts[t.id].encode()
              for n, t in enumerate(report.tables)}
    sums = _write_folder(out, files)
    span = {"from": request.start and request.start.isoformat(),
            "to": request.end and request.end.isoformat()}
    vault.record("report", [], out=str(out.resolve()), purpose=request.purpose, period=span,
                 threshold=request.threshold, lang=request.labels.locale,
                 report_sha256=sums["report.html"], files=sums, counted=counts["counted"],
                 left_out=counts["left_out"])
    return sums


def _write_folder(out: Path, files: dict[str, bytes]) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    for name, data in files.items():
        replace_atomic(out / name, data, secret=True)
    sha256sums = "".join(f"{sha}  {name}\n" for name, sha in sums.items()).encode()
    replace_atomic(out / "SHA256SUMS", sha256sums, secret=True)
    return sums


def _period_text(request: ReportRequest) -> str:
    if request.start is None and request.end is None:
        return text("all_time", request.labels.locale)
    start = request.start.isoformat() if request.start else "…"
    end = request.end.isoformat() if request.end else "…"
    return f"{start} – {end}"


def _inline(svg: str) -> str:
    """An SVG document as an element for the page (without its XML prolog and doctype)."""
    return svg[svg.index("<svg"):]
