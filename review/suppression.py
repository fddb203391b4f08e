"""Small-cell suppression for published counts: which counts a report must hide.

A report publishes tables of counts with their totals. Every count below the threshold is hidden
(primary suppression), and then more counts are hidden so that no hidden count can be worked out
by subtracting the shown counts of a line (a table row or column with its total) from the shown
total, nor by adding and subtracting several lines (complementary suppression).

The tables of one report share counts (the province table is the row total of the province ×
month table), so the rule runs over all of them at once: a count is a key, a line is the keys
whose counts add up to the line's last key. The rule: every line hides either none of its counts
or at least two, and no hidden count follows from the published ones by exact elimination. (Bounds
remain: a hidden count is known to be below the threshold, and never negative.) Pure and
I/O-free: values and lines in, the set of hidden keys out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction
from typing import TypeVar

from keys.errors import InputError

K = TypeVar("K", bound=Hashable)

DEFAULT_THRESHOLD = 5
MIN_THRESHOLD = 3  # below this a hidden count narrows to one or two people


class ThresholdError(InputError):
    """A suppression threshold below the minimum the project allows."""


def check_threshold(threshold: int) -> int:
    if threshold < MIN_THRESHOLD:
        raise ThresholdError(
            f"the suppression threshold must be at least {MIN_THRESHOLD} (got {threshold})"
        )
    return threshold


def suppress(values: Mapping[K, int], lines: Sequence[Sequence[K]], threshold: int) -> set[K]:
    """The keys whose counts must be hidden.

    `lines`: each a sequence of keys whose counts add up to the count of its last key (the
    line's total). Hidden: every count below `threshold`; then, for every line that would hide
    exactly one count, the smallest other count of that line (an inner count before the total,
    then the earliest), until every line hides none or at least two; then, while some hidden
    count still follows from the published ones by adding and subtracting whole lines (hidden
    counts linked in a chain rather than a loop), the smallest shown count of one of its lines."""
    check_threshold(threshold)
    hidden = {key for key, value in values.items() if value < threshold}
    while True:
        _pair_up(values, lines, hidden)
        exposed = determined(values, lines, hidden)
        partners = (_partner(values, line, hidden) for key in values if key in exposed
                    for line in lines if key in line)
        partner = next((p for p in partners if p is not None), None)
        if partner is None:
            return hidden
        hidden.add(partner)


def _pair_up(values: Mapping[K, int], lines: Sequence[Sequence[K]], hidden: set[K]) -> None:
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(key in hidden for key in line) != 1:
                continue
            partner = _partner(values, line, hidden)
            if partner is not None:
                hidden.add(partner)
                changed = True


def _partner(values: Mapping[K, int], line: Sequence[K], hidden: set[K]) -> K | None:
    last = len(line) - 1
    candidates = [(values[key], n == last, n) for n, key in enumerate(line) if key not in hidden]
    if not candidates:
        return None
    return line[min(candidates)[2]]


def recoverable(
    values: Mapping[K, int], lines: Sequence[Sequence[K]], hidden: set[K]
) -> set[K]:
    """What an attacker gets back by subtraction alone: repeatedly, a line with exactly one
    unknown count gives it (total minus the others, or the sum of the others). Used by tests
    and as a last check before anything is written."""
    known = {key for key in values if key not in hidden}
    found: set[K] = set()
    changed = True
    while changed:
        changed = False
        for line in lines:
            unknown = [key for key in line if key not in known]
            if len(unknown) == 1:
                known.add(unknown[0])
                found.add(unknown[0])
                changed = True
    return found


def determined(values: Mapping[K, int], lines: Sequence[Sequence[K]], hidden: set[K]) -> set[K]:
    """The hidden keys whose counts any linear combination of the published lines gives back
    (exact elimination over the rationals): a hidden count is determined when the reduced row of
    its pivot has no other unknown in it."""
    unknown = [key for key in values if key in hidden]
    column = {key: n for n, key in enumerate(unknown)}
    pivots: dict[int, dict[int, Fraction]] = {}
    for line in lines:
        row: dict[int, Fraction] = {}
        for n, key in enumerate(line):
            if key in column:
                row[column[key]] = row.get(column[key], Fraction(0)) + (-1 if n == len(line) - 1
                                                                        else 1)
        _reduce_into(pivots, {c: v for c, v in row.items() if v})
    return {unknown[c] for c, row in pivots.items() if len(row) == 1}


def _reduce_into(pivots: dict[int, dict[int, Fraction]], row: dict[int, Fraction]) -> None:
    """Add one equation to a fully reduced echelon form kept as {pivot column: row}."""
    for col, pivot_row in pivots.items():
        factor = row.get(col)
        if factor:
            for c, v in pivot_row.items():
                row[c] = row.get(c, Fraction(0)) - factor * v
            row = {c: v for c, v in row.items() if v}
    if not row:
        return
    col = min(row)
    scale = row[col]
    row = {c: v / scale for c, v in row.items()}
    for other in pivots.values():
        factor = other.get(col)
        if factor:
            for c, v in row.items():
                other[c] = other.get(c, Fraction(0)) - factor * v
            for c in [c for c, v in other.items() if not v]:
                del other[c]
    pivots[col] = row
