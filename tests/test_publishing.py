"""Publishing decisions on plain values: the baseline snapshot, moves, the migration CSV."""

from __future__ import annotations

import datetime as dt

import pytest

from segmentation.errors import InputError
from segmentation.storage import publishing

D1, D2, D3 = dt.date(2025, 10, 31), dt.date(2025, 11, 30), dt.date(2025, 12, 31)


def test_baseline_is_the_latest_earlier_snapshot():
    assert publishing.baseline(None, [D1, D2, D3], D3) == D2
    assert publishing.baseline(None, [D1, D3], dt.date(2025, 12, 1)) == D1


def test_baseline_of_the_first_snapshot_is_none():
    assert publishing.baseline(None, [], D1) is None
    assert publishing.baseline(None, [D2], D1) is None  # only later snapshots: a backfill


def test_baseline_configured_must_exist():
    assert publishing.baseline(D1, [D1, D2], D3) == D1
    with pytest.raises(InputError, match=r"drift.baseline_as_of 2025-11-30 has no .*available: "
                       r"2025-10-31, 2025-12-31"):  # fmt: skip
        publishing.baseline(D2, [D1, D3], D3)


def test_publication_moves_count_stayers_movers_entrants_and_leavers():
    rows = [
        {"from_segment_id": 1, "to_segment_id": 1, "customers": 10},
        {"from_segment_id": 1, "to_segment_id": 2, "customers": 3},
        {"from_segment_id": 2, "to_segment_id": 1, "customers": 4},
        {"from_segment_id": None, "to_segment_id": 2, "customers": 5},
        {"from_segment_id": 2, "to_segment_id": None, "customers": 6},
    ]
    pub = publishing.Publication(
        as_of=D2, model_name="m", model_version=1, customers=22, sizes={1: 14, 2: 8},
        names={1: "a", 2: "b"}, table_versions={}, history_mode="merged", migration=rows,
    )  # fmt: skip
    assert pub.moves() == {"stayed": 10, "moved": 7, "entered": 5, "left": 6}


def test_migration_csv_is_ordered_and_quotes_names_with_commas():
    rows = [
        {"from_segment_id": 2, "from_segment_name": "B", "to_segment_id": 1,
         "to_segment_name": 'Big, "bold"', "customers": 4, "share_of_from": 0.5},
        {"from_segment_id": None, "from_segment_name": None, "to_segment_id": 1,
         "to_segment_name": "A", "customers": 1, "share_of_from": 1.0},
    ]  # fmt: skip
    lines = publishing.migration_csv(rows).splitlines()
    assert lines[0] == ",".join(publishing.MIGRATION_CSV)
    assert lines[1] == ",,1,A,1,1.0"
    assert lines[2] == '2,B,1,"Big, ""bold""",4,0.5'
