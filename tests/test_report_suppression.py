"""review/suppression.py: small counts hidden, and none of them recoverable by subtraction,
line by line or from several lines at once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from review.suppression import ThresholdError, _pair_up, determined, recoverable, suppress

Key = tuple[object, ...]


def cross_table(cells: list[list[int]]) -> tuple[dict[Key, int], list[list[Key]]]:
    """A table with row totals, column totals and a grand total, as the report publishes."""
    rows, cols = len(cells), len(cells[0])
    values: dict[Key, int] = {}
    for r in range(rows):
        for c in range(cols):
            values[(r, c)] = cells[r][c]
        values[(r, "T")] = sum(cells[r])
    for c in range(cols):
        values[("T", c)] = sum(cells[r][c] for r in range(rows))
    values[("T", "T")] = sum(map(sum, cells))
    keys_r = [*range(rows), "T"]
    keys_c = [*range(cols), "T"]
    lines = [[(r, c) for c in keys_c] for r in keys_r] + [[(r, c) for r in keys_r] for c in keys_c]
    return values, lines


def test_a_small_count_and_its_partner_are_hidden() -> None:
    values = {"a": 3, "b": 12, "c": 20, "total": 35}
    hidden = suppress(values, [["a", "b", "c", "total"]], 5)
    assert hidden == {"a", "b"}  # b: the smallest other count, not the total


def test_nothing_small_hides_nothing() -> None:
    values = {"a": 7, "b": 12, "total": 19}
    assert suppress(values, [["a", "b", "total"]], 5) == set()


def test_the_total_is_hidden_when_it_is_the_only_partner() -> None:
    values = {"a": 2, "total": 2}
    assert suppress(values, [["a", "total"]], 5) == {"a", "total"}


def test_a_line_with_one_hidden_count_is_recoverable_and_suppress_never_leaves_one() -> None:
    values = {"a": 3, "b": 12, "total": 15}
    assert recoverable(values, [["a", "b", "total"]], {"a"}) == {"a"}
    assert recoverable(values, [["a", "b", "total"]], suppress(values, [["a", "b", "total"]], 5)
                       ) == set()


def test_linked_tables_are_protected_together() -> None:
    # The one-way table's counts are the cross table's row totals: one key each.
    values, lines = cross_table([[3, 10, 9], [8, 9, 12], [20, 11, 7]])
    hidden = suppress(values, lines, 5)
    assert (0, 0) in hidden
    assert not recoverable(values, lines, hidden)
    assert all(sum(k in hidden for k in line) != 1 for line in lines)


def test_a_count_worked_out_from_several_lines_is_protected_too() -> None:
    # Found by search: hiding pairs per line leaves (0, 0) hidden in every line with a partner,
    # yet rows and columns added and subtracted together give it back.
    cells = [[0, 5, 6, 2], [7, 6, 0, 5], [1, 2, 9, 12], [9, 0, 20, 9]]
    values, lines = cross_table(cells)
    paired = {k for k, v in values.items() if v < 5}
    _pair_up(values, lines, paired)
    assert not recoverable(values, lines, paired)  # subtraction line by line finds nothing...
    assert determined(values, lines, paired) == {(0, 0)}  # ...elimination does
    hidden = suppress(values, lines, 5)
    assert determined(values, lines, hidden) == set()
    assert hidden == paired | {(0, 1)}


def test_determined_sees_a_single_hidden_count_and_a_chain() -> None:
    values = {"a": 3, "b": 9, "t": 12, "c": 3, "d": 9, "u": 12}
    lines = [["a", "b", "t"], ["c", "d", "u"], ["a", "c", "x"]]
    assert determined({**values, "x": 6}, lines, {"a"}) == {"a"}
    assert determined({**values, "x": 6}, lines, {"a", "c"}) == {"a", "c"}  # a + c = 6, a = 3
    assert determined({**values, "x": 6}, lines, {"a", "b", "c", "d"}) == set()


@pytest.mark.parametrize("threshold", [0, 1, 2, -5])
def test_a_threshold_below_three_is_refused(threshold: int) -> None:
    with pytest.raises(ThresholdError, match="at least 3"):
        suppress({"a": 1}, [["a"]], threshold)


tables = st.integers(1, 5).flatmap(
    lambda rows: st.integers(1, 5).flatmap(
        lambda cols: st.lists(st.lists(st.integers(0, 12), min_size=cols, max_size=cols),
                              min_size=rows, max_size=rows)))


@settings(max_examples=300, deadline=None)
@given(cells=tables, threshold=st.integers(3, 8))
def test_no_hidden_count_can_be_recovered_by_subtraction(cells: list[list[int]],
                                                         threshold: int) -> None:
    values, lines = cross_table(cells)
    hidden = suppress(values, lines, threshold)
    assert {k for k, v in values.items() if v < threshold} <= hidden  # every small count
    assert recoverable(values, lines, hidden) == set()
    assert determined(values, lines, hidden) == set()  # nor by any sum of lines
    # ...and hiding is not wholesale: a count at or over the threshold is hidden only as a
    # partner, in a line that hides another.
    for key in hidden - {k for k, v in values.items() if v < threshold}:
        assert any(key in line and len(hidden & set(line)) >= 2 for line in lines)
