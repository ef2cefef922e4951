"""SST: rows of monotonic counters, own-row writes as coalesced diffs, max-merge of peers' diffs."""

from __future__ import annotations

import pytest

from derecho.core.sst import SST, MonotonicityError


def test_new_table_is_all_zero_and_clean():
    sst = SST(members=3, columns=4, my_rank=1)
    assert sst.members == 3
    assert sst.rows == [[0] * 4 for _ in range(3)]
    assert sst.own is sst.rows[1]
    assert sst.take_diff() is None
    assert sst.full_row() == []


@pytest.mark.parametrize("rank", [-1, 3, 10])
def test_rank_outside_the_view_is_refused(rank):
    with pytest.raises(ValueError, match="outside a view of 3 members"):
        SST(members=3, columns=2, my_rank=rank)


def test_set_raises_a_counter_and_marks_it_dirty():
    sst = SST(2, 3, 0)
    sst.set(1, 5)
    assert sst.own == [0, 5, 0]
    assert sst.take_diff() == [1, 5]


def test_set_backwards_is_a_monotonicity_error_and_changes_nothing():
    sst = SST(2, 3, 0)
    sst.set(2, 7)
    sst.take_diff()
    with pytest.raises(MonotonicityError, match="column 2 would go back from 7 to 6"):
        sst.set(2, 6)
    assert sst.own[2] == 7
    assert sst.take_diff() is None
    assert issubclass(MonotonicityError, ValueError)


def test_setting_the_same_value_is_not_a_change():
    sst = SST(2, 3, 0)
    sst.set(0, 4)
    assert sst.take_diff() == [0, 4]
    sst.set(0, 4)
    assert sst.take_diff() is None


def test_diff_coalesces_writes_latest_value_wins_sorted_by_column():
    sst = SST(2, 5, 1)
    sst.set(3, 1)
    sst.set(0, 2)
    sst.set(3, 9)
    sst.set(0, 4)
    sst.set(3, 10)
    assert sst.take_diff() == [0, 4, 3, 10]


def test_take_diff_returns_none_once_clean_and_only_new_changes_after():
    sst = SST(2, 3, 0)
    assert sst.take_diff() is None
    sst.set(0, 1)
    sst.set(1, 1)
    assert sst.take_diff() == [0, 1, 1, 1]
    assert sst.take_diff() is None
    sst.set(1, 2)
    assert sst.take_diff() == [1, 2]
    assert sst.take_diff() is None


def test_full_row_lists_every_nonzero_cell_and_leaves_the_diff_alone():
    sst = SST(2, 4, 0)
    sst.set(1, 3)
    sst.set(3, 8)
    assert sst.full_row() == [1, 3, 3, 8]
    assert sst.take_diff() == [1, 3, 3, 8]
    assert sst.full_row() == [1, 3, 3, 8]


def test_merge_keeps_the_maximum_so_stale_and_reordered_diffs_are_harmless():
    sst = SST(3, 3, 0)
    assert sst.merge(2, [0, 5, 2, 1]) is True
    assert sst.rows[2] == [5, 0, 1]
    # An older diff arriving late changes nothing.
    assert sst.merge(2, [0, 3, 2, 1]) is False
    assert sst.rows[2] == [5, 0, 1]
    # A diff where one cell grows and another is stale still grows.
    assert sst.merge(2, [0, 4, 1, 2]) is True
    assert sst.rows[2] == [5, 2, 1]
    # Merging never marks my own row dirty.
    assert sst.take_diff() is None
    assert sst.rows[1] == [0, 0, 0]


def test_merge_of_empty_diff_is_a_no_op():
    sst = SST(2, 2, 0)
    assert sst.merge(1, []) is False


@pytest.mark.parametrize("column", [-1, 3, 100])
def test_merge_with_unknown_column_is_refused(column):
    sst = SST(2, 3, 0)
    with pytest.raises(ValueError, match=f"row diff names column {column}; this table has 3"):
        sst.merge(1, [column, 1])


def test_merge_into_my_own_row_is_refused():
    sst = SST(2, 3, 1)
    with pytest.raises(ValueError, match="never merges diffs into its own row"):
        sst.merge(1, [0, 1])


def test_merge_with_odd_length_diff_is_refused():
    sst = SST(2, 3, 0)
    with pytest.raises(ValueError):
        sst.merge(1, [0, 5, 1])


def test_column_min_over_all_rows_or_a_subset():
    sst = SST(3, 2, 0)
    sst.set(0, 10)
    sst.merge(1, [0, 4])
    sst.merge(2, [0, 7])
    assert sst.column_min(0) == 4
    assert sst.column_min(0, [0, 2]) == 7
    assert sst.column_min(0, [0]) == 10
    assert sst.column_min(1) == 0
