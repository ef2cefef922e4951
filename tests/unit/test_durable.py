"""Durable membership records: whole-or-absent writes, and pruning trims of old views."""

from __future__ import annotations

import json
from pathlib import Path

from derecho.runtime.durable import prune_trims, write_durably


def test_a_record_is_written_whole_and_no_temporary_is_left(tmp_path: Path):
    path = tmp_path / "membership" / "view.json"
    write_durably(path, {"vid": 3})
    write_durably(path, {"vid": 4})
    assert json.loads(path.read_text()) == {"vid": 4}
    assert [p.name for p in path.parent.iterdir()] == ["view.json"]


def test_trims_of_views_before_the_given_one_are_pruned(tmp_path: Path):
    for vid in (0, 1, 2, 10):
        for shard in (0, 1):
            write_durably(tmp_path / f"ragged_trim-v{vid}-sg0-sh{shard}.json", {"vid": vid})
    write_durably(tmp_path / "view.json", {"vid": 3})
    prune_trims(tmp_path, 2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "ragged_trim-v10-sg0-sh0.json",
        "ragged_trim-v10-sg0-sh1.json",
        "ragged_trim-v2-sg0-sh0.json",
        "ragged_trim-v2-sg0-sh1.json",
        "view.json",
    ]
