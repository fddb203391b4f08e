"""The queue's table: draws only the rows on screen (Textual's line API).

Textual's DataTable measures every cell of every row it is given, which makes filling it with
10,000 submissions take seconds (bench/bench_workbench.py); this widget holds the sorted rows and
formats a row only when it scrolls into view, so sorting and filtering cost what the pure sort
in review/queue.py costs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from review.queue import Row

GAP = "  "
CURSOR = Style(bgcolor="#005fd7", bold=True)
ZEBRA = Style(bgcolor="#1c1c1c")


def header_line(columns: Sequence[tuple[str, int]]) -> Text:
    return Text(GAP.join(title.ljust(width)[:width] for title, width in columns), style="bold")


def fitted(cells: Sequence[Text], columns: Sequence[tuple[str, int]]) -> list[Text]:
    """Each cell cut or padded to its column's width."""
    found = []
    for cell, (_, width) in zip(cells, columns, strict=True):
        cell = cell.copy()
        cell.no_wrap, cell.end = True, ""
        cell.truncate(width, overflow="ellipsis", pad=True)
        found.append(cell)
    return found


class QueueTable(ScrollView, can_focus=True):
    """Rows of the queue with a cursor; Enter posts `Selected` with the row's id."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", show=False), Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False), Binding("pagedown", "page(1)", show=False),
        Binding("home", "move(-1000000000)", show=False),
        Binding("end", "move(1000000000)", show=False),
        Binding("enter", "select", "Open", show=False),
    ]
    cursor: reactive[int] = reactive(0, always_update=True)

    class Selected(Message):
        def __init__(self, sid: str) -> None:
            super().__init__()
            self.sid = sid

    def __init__(self, columns: Sequence[tuple[str, int]], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self.rows: Sequence[Row] = ()
        self._format: Callable[[Row], list[Text]] = lambda row: []
        self._cache: dict[int, Strip] = {}
        self._width = sum(w for _, w in self.columns) + len(GAP) * (len(self.columns) - 1)

    def show(self, rows: Sequence[Row], format_row: Callable[[Row], list[Text]]) -> None:
        """Replace the rows (already sorted and filtered); the cursor stays where it was."""
        self.rows, self._format, self._cache = rows, format_row, {}
        self.virtual_size = Size(self._width, len(rows))
        self.cursor = min(self.cursor, max(len(rows) - 1, 0))
        self.refresh()

    @property
    def current(self) -> Row | None:
        return self.rows[self.cursor] if self.rows else None

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self.rows):
            return Strip.blank(width)
        strip = self._cache.get(index)
        if strip is None:
            strip = self._cache[index] = self._strip(self._format(self.rows[index]))
        if index == self.cursor:
            strip = strip.apply_style(CURSOR)
        elif index % 2:
            strip = strip.apply_style(ZEBRA)
        return strip.crop_extend(scroll_x, scroll_x + width, None)

    def _strip(self, cells: list[Text]) -> Strip:
        """One segment run per cell, never merged with its neighbours: a right-to-left cell is
        then laid out on its own, not joined with the next into one run of text."""
        segments: list[Segment] = []
        for n, cell in enumerate(fitted(cells, self.columns)):
            if n:
                segments.append(Segment(GAP))
            segments += cell.render(self.app.console)
        return Strip(segments, self._width)

    def watch_cursor(self, old: int, new: int) -> None:
        top, height = self.scroll_offset.y, self.scrollable_content_region.height
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif height and new >= top + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self.refresh()

    def action_move(self, step: int) -> None:
        if self.rows:
            self.cursor = max(0, min(len(self.rows) - 1, self.cursor + step))

    def action_page(self, pages: int) -> None:
        self.action_move(pages * max(self.scrollable_content_region.height - 1, 1))

    def action_select(self) -> None:
        if self.current is not None:
            self.post_message(self.Selected(self.current.id))

    def on_click(self, event: events.Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self.rows):
            if index == self.cursor and event.chain > 1:
                self.action_select()
            self.cursor = index

