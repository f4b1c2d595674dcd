"""Tables of an older release (membership partitioned by as_of only) are refused, then upgraded."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from deltalake import DeltaTable

from segmentation.config import load_config
from segmentation.errors import InputError
from segmentation.storage import delta_tables, publishing
from tests.conftest import ROOT


def test_old_membership_layout_is_refused_then_upgraded_in_one_version(spark, tmp_path):
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides=[f"storage.warehouse={tmp_path}"])
    path = cfg.storage.table_path("segment_membership")
    rows = [
        (f"c{i}", dt.date(2025, 11 + i % 2, 30), i % 3 + 1, "customer_segments", 1)
        for i in range(40)
    ]
    old = spark.createDataFrame(
        rows, "customer_id string, as_of date, segment_id int, model_name string, model_version int"
    )
    delta_tables.write(
        spark, old, path, delta_tables.WriteOptions(mode="overwrite", partition_by=("as_of",)),
    )  # fmt: skip
    with pytest.raises(InputError, match=r"segment_membership by \['as_of'\].*make upgrade-tables"):
        publishing.check_layout(spark, cfg.storage)

    assert publishing.upgrade_layout(spark, cfg.storage) == {"segment_membership": 1}
    table = DeltaTable(path)
    assert table.metadata().partition_columns == ["model_name", "as_of"]
    before = pl.read_delta(path, version=0).sort("customer_id")
    after = pl.read_delta(path).select(before.columns).sort("customer_id")
    assert after.equals(before)
    publishing.check_layout(spark, cfg.storage)  # no longer raises
    assert publishing.upgrade_layout(spark, cfg.storage) == {}
