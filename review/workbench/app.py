"""The workbench's screens and actions (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Header, Input, Label, Static, TextArea

from keys.errors import AmanatError, InputError
from keys.sanitize import clean
from review.answers import questionnaire_labels
from review.case import ExportRequest, export_case, extract_files
from review.consent import PURPOSES
from review.content import Content
from review.queue import Filter, Row, Sort, parse_filter, rows, select
from review.replies import make_reply, sent_replies
from review.report_text import LANGUAGES
from review.search import SearchIndex
from review.suppression import DEFAULT_THRESHOLD, check_threshold
from review.vault import Vault, today
from review.workbench.render import (
    COLUMNS,
    cells,
    option_labels,
    source_text,
    submission_text,
)
from review.workbench.table import QueueTable, header_line

QUEUE_COLUMNS = (("", 1), *COLUMNS)  # the first: marked for a case export


@dataclass(frozen=True)
class Options:
    lang: str = "en"
    questionnaire: Path | None = None  # the server's questionnaire file, for labels
    out: Path = Path()  # where replies, extracted files, cases and reports go by default


# --- dialogs -------------------------------------------------------------------------------------


class Ask(ModalScreen[str | None]):
    """One line: a tag, a folder. Enter accepts, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(value=self.value, id="answer")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Editor(ModalScreen[tuple[str, str] | None]):
    """An editor pane for a note or a reply, so the text never passes through a command line;
    with a folder line for where a reply bundle goes. Ctrl+S saves, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True), ("escape", "cancel", "Cancel")]

    def __init__(self, title: str, folder: str | None = None) -> None:
        super().__init__()
        self.title_text, self.folder = title, folder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog editor"):
            yield Label(f"{self.title_text}  (Ctrl+S saves, Escape cancels)")
            yield TextArea(id="text", soft_wrap=True)
            if self.folder is not None:
                yield Label("reply bundle goes to the folder:")
                yield Input(value=self.folder, id="folder")

    def action_save(self) -> None:
        folder = self.query_one("#folder", Input).value if self.folder is not None else ""
        self.dismiss((self.query_one("#text", TextArea).text, folder))

    def action_cancel(self) -> None:
        self.dismiss(None)


class FieldsDialog(ModalScreen[dict[str, str] | None]):
    """A few named text fields; Ctrl+S (or Enter) hands them back, Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True), ("escape", "cancel", "Cancel")]
    TITLE = ""
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, defaults: dict[str, str]) -> None:
        super().__init__()
        self.defaults = defaults

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"{self.TITLE}  (Ctrl+S writes it, Escape cancels)")
            for key, label in self.FIELDS:
                yield Label(label)
                yield Input(value=self.defaults.get(key, ""), id=key)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        self.dismiss({key: self.query_one(f"#{key}", Input).value for key, _ in self.FIELDS})

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReportDialog(FieldsDialog):
    """The report's folder, period and threshold (the language is the workbench's)."""

    TITLE = "anonymized advocacy report"
    FIELDS = (("out", "folder"), ("start", "from day (YYYY-MM-DD, empty: all)"),
              ("end", "to day (YYYY-MM-DD, empty: all)"), ("threshold", "hide counts below"))

    def __init__(self, out: str) -> None:
        super().__init__({"out": out, "threshold": str(DEFAULT_THRESHOLD)})


class ExportDialog(FieldsDialog):
    """The case's folder, its purpose, and (only to export without consent) the reason."""

    TITLE = "export a case"
    FIELDS = (("out", "new folder"), ("purpose", f"purpose ({' | '.join(PURPOSES)})"),
              ("override", "export without the sources' consent because (empty: never)"))


# --- views ---------------------------------------------------------------------------------------

_ACTIONS: list[BindingType] = [
    ("t", "app.tag", "Tag"), ("n", "app.note", "Note"), ("r", "app.reply", "Reply"),
    ("e", "app.extract", "Extract"), ("x", "app.export", "Export case"),
    ("o", "app.source", "Source"), ("l", "app.language", "Language"),
]


class SubmissionScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [("escape", "app.pop_screen", "Back"), *_ACTIONS]

    def __init__(self, sid: str) -> None:
        super().__init__()
        self.sid = sid

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(id="body", markup=False)
        yield Footer()


class SourceScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        ("escape", "app.pop_screen", "Back"), ("r", "app.reply", "Reply")]

    def __init__(self, source: str, sid: str) -> None:
        super().__init__()
        self.source, self.sid = source, sid

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield Static(id="body", markup=False)
        yield Footer()


class QueueScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        ("slash", "app.focus_filter", "Filter"), ("s", "app.sort", "Sort"),
        ("space", "app.mark", "Mark"), ("p", "app.report", "Report"), *_ACTIONS,
        ("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: tag:X urgency:days consent:advocacy words  (Enter)",
                    id="filter")
        yield Static(header_line(QUEUE_COLUMNS), id="columns", markup=False)
        yield QueueTable(QUEUE_COLUMNS, id="queue")
        yield Static(id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        assert isinstance(self.app, Workbench)
        self.app.refresh_queue()
        self.query_one("#queue", QueueTable).focus()


# --- the application -----------------------------------------------------------------------------


class Workbench(App[None]):
    TITLE = "amanat-review"
    # Textual's command palette offers "Screenshot", which writes the screen (testimony and
    # all) to an SVG file in the current folder: plaintext on disk that no custody entry names.
    # What leaves the vault leaves by extract, export-case or report.
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    #status { height: 2; padding: 0 1; background: $boost; }
    #filter { margin: 0 0; }
    .dialog { background: $panel; border: thick $accent; padding: 1 2; width: 90%;
              height: auto; max-height: 90%; }
    .editor { height: 80%; }
    .editor TextArea { height: 1fr; }
    Ask, Editor, ReportDialog { align: center middle; }
    """

    def __init__(self, vault: Vault, options: Options) -> None:
        super().__init__()
        self.vault, self.options = vault, options
        self.lang = options.lang
        self.labels = questionnaire_labels(options.questionnaire, self.lang)
        self.sort: Sort = "urgency"
        self.filter = Filter()
        self.marked: set[str] = set()
        self.shown: list[Row] = []
        self.status = ""
        self._index: SearchIndex | None = None
        self._rows: list[Row] | None = None

    # --- lifecycle and the queue ----------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        return QueueScreen()

    def row_of(self, sid: str) -> Row:
        """The queue's row of a submission (its matches are found across the whole vault)."""
        if self._rows is None:
            self.refresh_queue()
        assert self._rows is not None
        return next(r for r in self._rows if r.id == sid)

    def refresh_queue(self, *, changed: bool = False) -> None:
        """Redraw the queue after a change of sort, filter or language; `changed`: of the vault
        too (the rows are made again from its state; a sort or filter reuses them)."""
        if changed or self._rows is None:
            self._rows = rows(self.vault.submissions.values(),
                              self.vault.replies)
        hits = None
        if self.filter.text:
            if self._index is None:
                self._index = SearchIndex(self.vault.search_texts())
            hits = frozenset(h.id for h in self._index.search(self.filter.text))
        self.shown = select(self._rows, self.filter, self.sort, hits)
        options, marked = option_labels(self.labels), self.marked

        def format_row(row: Row) -> list[Text]:  # called only for the rows on screen
            return [Text("●" if row.id in marked else ""), *cells(row, options)]

        self._queue_screen().query_one("#queue", QueueTable).show(self.shown, format_row)
        total = len(self.vault.submissions)
        self.sub_title = (f"{len(self.shown)} of {total} · sorted by {self.sort} · "
                          f"labels {self.lang} · {len(self.marked)} marked")

    def _queue_screen(self) -> QueueScreen:
        return next(s for s in self.screen_stack if isinstance(s, QueueScreen))

    def say(self, text: str, error: bool = False) -> None:
        self.status = text
        for screen in self.screen_stack:
            for widget in screen.query("#status"):
                if isinstance(widget, Static):
                    widget.update(Text(clean(text), style="bold red" if error else ""))
        self.notify(clean(text), severity="error" if error else "information")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.filter = parse_filter(event.value)
            self.refresh_queue()
            self._queue_screen().query_one("#queue", QueueTable).focus()

    def on_queue_table_selected(self, event: QueueTable.Selected) -> None:
        self.open_submission(event.sid)

    def action_focus_filter(self) -> None:
        self._queue_screen().query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        self.sort = "day" if self.sort == "urgency" else "urgency"
        self.refresh_queue()

    def action_language(self) -> None:
        self.lang = LANGUAGES[(LANGUAGES.index(self.lang) + 1) % len(LANGUAGES)]
        self.labels = questionnaire_labels(self.options.questionnaire, self.lang)
        self.refresh_views()

    def action_mark(self) -> None:
        sid = self.current_id()
        if sid is not None:
            self.marked ^= {sid}
            self.refresh_queue()

    # --- views ----------------------------------------------------------------------------------

    def current_id(self) -> str | None:
        """The submission an action is for: the one open, else the queue's highlighted row."""
        for screen in reversed(self.screen_stack):
            if isinstance(screen, SubmissionScreen | SourceScreen):
                return screen.sid
            if isinstance(screen, QueueScreen):
                row = screen.query_one("#queue", QueueTable).current
                return None if row is None else row.id
        return None

    def open_submission(self, sid: str) -> None:
        screen = SubmissionScreen(sid)
        self.push_screen(screen, lambda _: None)
        self.call_after_refresh(self.draw_views)

    def action_source(self) -> None:
        sid = self.current_id()
        if sid is not None:
            self.push_screen(SourceScreen(self.vault.submission(sid)["source"], sid))
            self.call_after_refresh(self.draw_views)

    def refresh_views(self, *, changed: bool = False) -> None:
        self.refresh_queue(changed=changed)
        self.draw_views()

    def draw_views(self) -> None:
        """The open submission and source views, read again from the vault."""
        for screen in self.screen_stack:
            if isinstance(screen, SubmissionScreen):
                screen.query_one("#body", Static).update(self.submission_view(screen.sid))
            elif isinstance(screen, SourceScreen):
                screen.query_one("#body", Static).update(self.source_view(screen.source))

    def submission_view(self, sid: str) -> Text:
        sub = self.vault.submission(sid)
        content: Content | None = None
        if sub.get("readable", True) and not sub.get("quarantine"):
            try:
                content = self.vault.content(sub)
            except AmanatError as exc:
                return Text(f"cannot open {sid}: {clean(str(exc))}")
        row = self.row_of(sid)
        replies = sent_replies(self.vault, sub["source"])
        return submission_text(sub, content, self.labels, replies, row)

    def source_view(self, source: str) -> Text:
        subs = [s for s in self.vault.submissions.values() if s["source"] == source]
        return source_text(source, subs, sent_replies(self.vault, source))

    # --- actions: each calls what the command of the same name calls ------------------------------

    def attempt(self, what: str, work: Callable[[], str]) -> None:
        try:
            done = work()
        except (AmanatError, OSError) as exc:
            self.say(f"{what} failed: {exc}", error=True)
            return
        self.say(done)
        self.refresh_views(changed=True)

    def action_tag(self) -> None:
        sid = self.current_id()
        if sid is None:
            return

        def tagged(answer: str | None) -> None:
            if not answer or not answer.strip():
                return
            remove = answer.startswith("-")
            tag = answer[1:] if remove else answer
            self.attempt("tag", lambda: f"{sid}: tags "
                         f"{', '.join(self.vault.tag(sid, tag, remove=remove)) or '—'}")

        self.push_screen(Ask(f"tag for {sid} (-TAG removes it)"), tagged)

    def action_note(self) -> None:
        sid = self.current_id()
        if sid is None:
            return

        def noted(result: tuple[str, str] | None) -> None:
            if result is not None:
                self.attempt("note", lambda: f"{sid}: {self.vault.add_note(sid, result[0])} "
                             "note(s)")

        self.push_screen(Editor(f"note on {sid}"), noted)

    def action_reply(self) -> None:
        sid = self.current_id()
        if sid is None:
            return
        source = self.vault.submission(sid)["source"]

        def replied(result: tuple[str, str] | None) -> None:
            if result is not None:
                text, folder = result
                self.attempt("reply", lambda: f"reply bundle written: "
                             f"{make_reply(self.vault, source, text, Path(folder))} "
                             "(carry it with `amanat transfer push`)")

        self.push_screen(Editor(f"reply to source {source}", str(self.options.out / "outbox")),
                         replied)

    def action_extract(self) -> None:
        sid = self.current_id()
        if sid is None:
            return

        def extract(folder: str | None) -> None:
            if folder:
                def run() -> str:
                    written = extract_files(self.vault, sid, Path(folder))
                    return (f"{len(written)} file(s) written to {folder}, each verified "
                            "against its SHA-256")

                self.attempt("extract", run)

        self.push_screen(Ask(f"extract the attachments of {sid} to the folder",
                             str(self.options.out / f"extract-{sid}")), extract)

    def action_export(self) -> None:
        ids = sorted(self.marked) or [sid for sid in [self.current_id()] if sid]
        if not ids:
            return

        def export(answers: dict[str, str] | None) -> None:
            if answers is not None:
                self.attempt("export-case", lambda: f"case of {len(ids)} submission(s) written "
                             f"to {self._export(ids, answers)}")

        default = self.options.out / f"case-{today()}-{len(self.vault.custody)}"
        self.push_screen(ExportDialog({"out": str(default), "purpose": PURPOSES[0]}), export)

    def _export(self, ids: list[str], answers: dict[str, str]) -> Path:
        purpose = answers["purpose"].strip()
        if purpose not in PURPOSES:
            raise ExportInputError(f"the purpose is one of {', '.join(PURPOSES)}")
        override = answers["override"].strip() or None
        return export_case(self.vault, ids, Path(answers["out"]), ExportRequest(purpose, override))

    def action_report(self) -> None:
        def report(answers: dict[str, str] | None) -> None:
            if answers is not None:
                self.attempt("report", lambda: self._report(answers))

        default = self.options.out / f"report-{today()}-{len(self.vault.custody)}"
        self.push_screen(ReportDialog(str(default)), report)

    def _report(self, answers: dict[str, str]) -> str:
        from review.report import ReportRequest, make_report  # loads matplotlib: only here

        try:
            start, end = (date.fromisoformat(answers[k]) if answers[k].strip() else None
                          for k in ("start", "end"))
            threshold = check_threshold(int(answers["threshold"]))
        except ValueError as exc:
            raise ReportInputError(f"the period or threshold is not valid: {exc}") from None
        out = Path(answers["out"])
        sums = make_report(self.vault, ReportRequest(out=out, labels=self.labels,
                                                     threshold=threshold, start=start, end=end))
        return f"report written to {out} (report.html sha256 {sums['report.html']})"


class ExportInputError(InputError):
    """A case export asked for with a purpose that is not one."""


class ReportInputError(InputError):
    """A report asked for with a day or threshold that is not one."""
