"""The shared state table (SST): one row of monotonic counters per member of a view.

Each member writes only its own row and pushes the changed cells to its peers as a diff;
it merges peers' diffs into their rows. Because every cell only grows, merging keeps the
maximum, a stale or reordered diff is harmless, and coalescing many writes into one diff
(the latest value wins) loses nothing. Protocol steps are predicates over this table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class MonotonicityError(ValueError):
    """A member tried to move one of its own counters backwards."""


class SST:
    __slots__ = ("_dirty", "columns", "my_rank", "own", "rows")

    def __init__(self, members: int, columns: int, my_rank: int) -> None:
        if not 0 <= my_rank < members:
            raise ValueError(f"rank {my_rank} is outside a view of {members} members")
        self.columns = columns
        self.my_rank = my_rank
        self.rows: list[list[int]] = [[0] * columns for _ in range(members)]
        self.own = self.rows[my_rank]
        self._dirty: set[int] = set()

    @property
    def members(self) -> int:
        return len(self.rows)

    def set(self, column: int, value: int) -> None:
        """Raise one of my own counters; the change goes out with the next diff."""
        current = self.own[column]
        if value > current:
            self.own[column] = value
            self._dirty.add(column)
        elif value < current:
            raise MonotonicityError(f"column {column} would go back from {current} to {value}")

    def merge(self, rank: int, diff: Sequence[int]) -> bool:
        """Apply a peer's diff, a flat [column, value, column, value, ...] list.

        Returns whether any cell grew. Unknown columns are a protocol error of the peer.
        """
        if rank == self.my_rank:
            raise ValueError("a member never merges diffs into its own row")
        if len(diff) % 2:
            raise ValueError(f"row diff has {len(diff)} entries; it must be [column, value] pairs")
        row = self.rows[rank]
        grew = False
        columns = self.columns
        for k in range(0, len(diff) - 1, 2):
            column = diff[k]
            value = diff[k + 1]
            if not 0 <= column < columns:
                raise ValueError(f"row diff names column {column}; this table has {columns}")
            if value > row[column]:
                row[column] = value
                grew = True
        return grew

    def take_diff(self) -> list[int] | None:
        """The cells of my row changed since the last call, or None when nothing changed."""
        if not self._dirty:
            return None
        own = self.own
        diff: list[int] = []
        for column in sorted(self._dirty):
            diff.append(column)
            diff.append(own[column])
        self._dirty.clear()
        return diff

    def full_row(self) -> list[int]:
        """My whole row as a diff, for a peer that (re)connects."""
        diff: list[int] = []
        for column, value in enumerate(self.own):
            if value:
                diff.append(column)
                diff.append(value)
        return diff

    def column_min(self, column: int, ranks: Iterable[int] | None = None) -> int:
        rows = self.rows
        if ranks is None:
            return min(row[column] for row in rows)
        return min(rows[r][column] for r in ranks)
