"""Where the jobs run and write: Spark, storage (tables and their catalog) and MLflow."""

from __future__ import annotations

import re
from typing import Self

from pydantic import Field, model_validator

from segmentation.config.types import (
    Bool,
    FrozenMap,
    Int,
    Str,
    _FrozenDict,
    _require,
    _Section,
    join_path,
)


class SparkConfig(_Section):
    master: Str | None = "local[*]"
    app_name: Str = "customer-segmentation"
    shuffle_partitions: Int = 8
    ui_enabled: Bool = False
    conf: FrozenMap[Str] = Field(default_factory=_FrozenDict)
    # Local Delta jar files for machines without network (empty: resolved from Maven).
    delta_jars: tuple[Str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Self:
        _require(self.shuffle_partitions >= 1, "spark.shuffle_partitions must be >= 1")
        return self


_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"


class StorageConfig(_Section):
    warehouse: Str = "warehouse"
    run_key: Str | None = None
    catalog: Str | None = None
    schema_: Str | None = Field(default=None, alias="schema")
    metastore: Str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        for key, value in (("storage.catalog", self.catalog), ("storage.schema", self.schema_)):
            _require(
                value is None or re.match(_IDENTIFIER, value) is not None,
                f"{key} must be a plain identifier (letters, digits and _, starting with a "
                f"letter or _), got {value!r}",
            )
        _require(
            self.catalog is None or self.schema_ is not None,
            "storage.catalog needs storage.schema: the schema (database) the tables are "
            "registered in",
        )
        _require(
            self.metastore is None or bool(self.metastore.strip()),
            f"storage.metastore must name a folder (or be null), got {self.metastore!r}",
        )
        _require(
            self.metastore is None or self.schema_ is not None,
            "storage.metastore needs storage.schema: the metastore holds the tables registered "
            "in that schema",
        )
        return self

    @property
    def registered(self) -> bool:
        """Whether the tables are registered in a catalog (``storage.schema`` is set)."""
        return self.schema_ is not None

    def table_path(self, name: str) -> str:
        """Location of the output table ``name`` under the warehouse root."""
        return join_path(self.warehouse, name)


class TrackingConfig(_Section):
    tracking_uri: Str = "sqlite:///mlflow.db"
    artifact_location: Str = "mlartifacts"
    experiment: Str = "customer-segmentation"
    registered_model: Str = "customer_segments"
    alias: Str = "champion"
    promote: Bool = False
