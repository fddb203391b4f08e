"""The report's charts: one SVG per table, drawn with matplotlib (the `review` extra).

Imported only by `amanat-review report`, so the other commands start without matplotlib. Text
stays text in the SVG (svg.fonttype "none"): the browser shapes Arabic-script labels, which
matplotlib's own glyph layout would draw unjoined and left to right. Hidden counts are drawn as
no bar and labelled "< N": the chart shows nothing the table does not.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

from keys.errors import ConfigError
from review.report_text import RTL

try:
    import matplotlib
    from matplotlib.figure import Figure

    HAVE_PLOTTING = True
except ImportError:  # tested in a subprocess with matplotlib hidden (tests/test_review_report.py)
    HAVE_PLOTTING = False

if TYPE_CHECKING:
    from review.report import Report, Table


NO_METADATA = ("Creator", "Date", "Format", "Type")


class PlottingMissingError(ConfigError):
    """matplotlib is not installed: the report needs the `review` extra."""


def require_plotting() -> None:
    if not HAVE_PLOTTING:
        raise PlottingMissingError(
            "the report needs matplotlib, which is not installed: install amanat with its "
            "`review` extra (pip install 'amanat[review]', or the offline wheelhouse built by "
            "deploy/build-wheelhouse.sh)"
        )


def chart_svg(report: Report, table: Table) -> str:
    require_plotting()
    with matplotlib.rc_context({
        "svg.fonttype": "none",
        "svg.hashsalt": "amanat-report",  # stable element ids: the same report hashes the same
        "font.family": ["DejaVu Sans", "Noto Naskh Arabic", "sans-serif"],
        "font.size": 9,
    }), warnings.catch_warnings():
        # DejaVu Sans has no Arabic letters: matplotlib warns while measuring the labels; the
        # browser draws them with its own fonts.
        warnings.simplefilter("ignore", UserWarning)
        figure = _heatmap(report, table) if table.crossed else _bars(report, table)
        out = io.StringIO()
        # No metadata: no date (the same report hashes the same) and no RDF namespaces.
        figure.savefig(out, format="svg", metadata=dict.fromkeys(NO_METADATA),
                       bbox_inches="tight")
    return out.getvalue()


def _bars(report: Report, table: Table) -> Any:
    rows = table.rows[:-1]  # not the total
    figure = Figure(figsize=(7, 0.35 * len(rows) + 1))
    ax = figure.add_subplot()
    labels = [label for label, _ in rows]
    shown = [0 if keys[0] in report.hidden else report.values[keys[0]] for _, keys in rows]
    positions = list(range(len(rows)))
    ax.barh(positions, shown, color="#3b6ea5")
    for y, (_, keys) in zip(positions, rows, strict=True):
        ax.text(shown[y], y, f" {report.shown(keys[0])} ", va="center",
                ha="right" if report.lang in RTL else "left")
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()
    ax.set_xlabel(table.columns[0])
    ax.set_xlim(0, max([*shown, 1]) * 1.15)
    if report.lang in RTL:  # bars grow from the right, labels on the right
        ax.invert_xaxis()
        ax.yaxis.tick_right()
    ax.spines[["top", "left" if report.lang in RTL else "right"]].set_visible(False)
    return figure


def _heatmap(report: Report, table: Table) -> Any:
    rows = table.rows[:-1]
    columns = table.columns[:-1]
    figure = Figure(figsize=(max(4.0, 0.8 * len(columns) + 3), 0.4 * len(rows) + 1.5))
    ax = figure.add_subplot()
    grid = [[0 if k in report.hidden else report.values[k] for k in keys[:-1]] for _, keys in rows]
    # pcolormesh, not imshow: vector cells (imshow embeds a PNG).
    ax.pcolormesh(grid, cmap="Blues", edgecolors="white", linewidth=1)
    peak = max([v for row in grid for v in row] + [1])
    for y, (_, keys) in enumerate(rows):
        for x, key in enumerate(keys[:-1]):
            dark = grid[y][x] > peak * 0.6
            ax.text(x + 0.5, y + 0.5, report.shown(key), ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks([x + 0.5 for x in range(len(columns))], list(columns), rotation=45,
                  ha="right")
    ax.set_yticks([y + 0.5 for y in range(len(rows))], [label for label, _ in rows])
    ax.invert_yaxis()
    if report.lang in RTL:
        ax.invert_xaxis()
        ax.yaxis.tick_right()
    return figure
