"""Identity stitching: normalisation, the graph and its guard, connected components on long
chains, stable keys across runs, the job's tables, and features on the stitched key.

Hand-made graphs with expectations worked out by hand; the end-to-end test on a generated
sample with planted persons is ``slow``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from segmentation.config import Identifier, IdentityConfig
from segmentation.errors import ConfigError, InputError
from segmentation.identity import components, graph, keys, sightings
from segmentation.identity.normalise import Spec, normalised_frame
from tests.conftest import local_config

AS_OF = dt.date(2025, 6, 30)
EMAIL, CRM, DEVICE, PHONE = "email", "crm_id", "device_id", "phone"


def ident(column: str, kind: str | None = None) -> Identifier:
    return Identifier(column=column, type=kind or column)


def stitch(spark, rows, *, previous=None, identity=None, as_of=AS_OF, columns=None):
    """Stitch hand-made rows ``[(email, crm_id, device_id, seen), ...]`` (None: missing).

    Returns ``{(type, identifier): key}``, the changes, the held-back identifiers and the
    number of rounds.
    """
    identity = identity or IdentityConfig()
    columns = columns or (EMAIL, CRM, DEVICE)
    schema = ", ".join(f"{c} string" for c in columns) + ", seen timestamp"
    frame = spark.createDataFrame(rows, schema)
    ids = [ident(c) for c in columns]
    seen_rows, _ = sightings.rows_of(frame, ids, identity, seen=F.col("seen"))
    nodes = graph.nodes(seen_rows).cache()
    pair_rows = graph.pairs(seen_rows).cache()
    shared = graph.Guard(identity.max_degree).shared(pair_rows).cache()
    found = components.connected_components(
        nodes,
        graph.edges(pair_rows, shared),
        max_iterations=identity.max_iterations,
        driver_max_edges=identity.driver_max_edges,
    )
    members = nodes.join(found.labels, on=graph.NODE).drop(graph.NODE)
    prev = keys.empty_previous(nodes) if previous is None else previous
    keyed = keys.assign(members, prev, as_of=as_of)
    mapping = {(r[0], r[1]): r[2] for r in keyed.members.select(
        "identifier_type", "identifier", "customer_key").collect()}  # fmt: skip
    changes = sorted(tuple(r) for r in keyed.changes.collect())
    held = sorted((r["identifier"], r["linked_type"], r["degree"]) for r in shared.collect())
    snapshot = keyed.members.select("identifier_type", "identifier", "customer_key",
                                    "first_seen").localCheckpoint()  # fmt: skip
    return mapping, changes, held, found.iterations, snapshot


def customers_of(mapping) -> list[set[str]]:
    """The stitched customers as sets of identifiers, sorted."""
    by_key: dict[str, set[str]] = {}
    for (_, value), key in mapping.items():
        by_key.setdefault(key, set()).add(value)
    return sorted(by_key.values(), key=sorted)


def ts(day: int) -> dt.datetime:
    return dt.datetime(2025, 1, day, tzinfo=dt.UTC)


# --- normalisation ---------------------------------------------------------------------------


def _normalised(spark, kind, values, identity=None, data_type=None):
    identity = identity or IdentityConfig()
    data_type = data_type or T.StringType()
    df = spark.createDataFrame(
        [(v,) for v in values], T.StructType([T.StructField("v", data_type)])
    )
    spec = Spec("v", kind, "test", "value", "status")
    framed = normalised_frame(df, [spec], identity).select("value", "status").collect()
    return [(r[0], r[1]) for r in framed]


def test_normalise_email_trims_and_lowercases_and_refuses_placeholders(spark):
    got = _normalised(spark, EMAIL, ["Ann@X.com ", "ann@x.com", " ", None, "unknown",
                                     "TEST@example.com", "no at sign", "a b@x.com"])  # fmt: skip
    assert got == [
        ("ann@x.com", None), ("ann@x.com", None), (None, "missing"), (None, "missing"),
        (None, "placeholder"), (None, "placeholder"), (None, "invalid"), (None, "invalid"),
    ]  # fmt: skip


def test_normalise_phone_to_digits_with_the_country_code(spark):
    identity = IdentityConfig(phone_country_code="44")
    got = _normalised(spark, PHONE, ["020 7946 0000", "+44 20 7946 0000", "0044 (20) 7946-0000",
                                     "000-000-0000", "12 34", "0"], identity)  # fmt: skip
    assert got == [
        ("+442079460000", None), ("+442079460000", None), ("+442079460000", None),
        (None, "placeholder"), (None, "invalid"), (None, "placeholder"),
    ]  # fmt: skip
    # Without a country code, national numbers stay digits and international ones keep "+".
    got = _normalised(spark, PHONE, ["020 7946 0000", "+44 20 7946 0000"])
    assert got == [("02079460000", None), ("+442079460000", None)]


def test_normalise_ids_numbers_as_integer_text_devices_case_blind(spark):
    numbers = _normalised(spark, CRM, [17850.0, 17850.5], data_type=T.DoubleType())
    assert numbers == [("17850", None), (None, "invalid")]
    assert _normalised(spark, DEVICE, [" AbC-1 "]) == [("abc-1", None)]
    # Blanks beyond U+0020 (no-break space, TAB, zero-width space) are trimmed; blank is missing.
    assert _normalised(spark, DEVICE, ["\u00a0AbC-1\t", "\u200b \u00a0"]) == [
        ("abc-1", None), (None, "missing")]  # fmt: skip
    decimals = _normalised(spark, CRM, [Decimal("17850.00"), Decimal("17850.50"), None],
                           data_type=T.DecimalType(10, 2))  # fmt: skip
    assert decimals == [("17850", None), (None, "invalid"), (None, "missing")]
    assert _normalised(spark, "loyalty_card", [" AbC-1 "]) == [("AbC-1", None)]


def test_rows_of_counts_missing_placeholders_and_invalid_per_column(spark):
    frame = spark.createDataFrame(
        [("Ann@X.com ", "c1"), ("unknown", "c2"), ("", "0"), ("bad", None)],
        "email string, crm string",
    )
    _, counts = sightings.rows_of(frame, [ident(EMAIL), ident("crm", CRM)], IdentityConfig())
    assert [(c.column, c.identifiers, c.missing, c.placeholder, c.invalid) for c in counts] == [
        (EMAIL, 1, 1, 1, 1), ("crm", 2, 1, 1, 0),
    ]  # fmt: skip


# --- hand-made graphs: every scenario in one graph, stitched on two days -------------------

# Each scenario's identifiers are its own, so one stitching run checks them all.
CHAIN = [("a@x.com", "b", None, ts(1)), (None, "b", "c", ts(2)), ("d@x.com", None, "c", ts(3))]
SPELLINGS = [("Ann@X.com ", "s1", None, ts(1)), ("ann@x.com", None, "sdev", ts(2))]
PLACEHOLDERS = [("test@example.com", "p1", None, ts(1)), ("test@example.com", "p2", None, ts(2)),
                ("unknown", "p3", "0", ts(3))]  # fmt: skip
TABLET = [("gus@x.com", "g1", "tablet", ts(1)), ("hal@x.com", "g2", "tablet", ts(2)),
          (None, "g1", "phone-gus", ts(3))]  # fmt: skip
MERGE_DAY1 = [("eve@x.com", "e1", None, ts(1)), ("eve2@x.com", None, "ed2", ts(5))]
# Day 2: one row links e1 to eve2@x.com (a login on the second address).
MERGE_EDGE = ("eve2@x.com", "e1", None, ts(9))
SPLIT_DAY1 = [("fay@x.com", "f1", None, ts(1)), ("fay@x.com", None, "fd9", ts(3)),
              (None, None, "fd9", ts(2))]  # fmt: skip
DAY1 = [*CHAIN, *SPELLINGS, *PLACEHOLDERS, *TABLET, *MERGE_DAY1, *SPLIT_DAY1]
# Day 2: the merge's new row; the row linking fd9 to fay@x.com is gone (deleted).
DAY2 = [r for r in DAY1 if r != SPLIT_DAY1[1]] + [MERGE_EDGE]


@pytest.fixture(scope="module")
def day1(spark):
    return stitch(spark, DAY1)


@pytest.fixture(scope="module")
def day2(spark, day1):
    return stitch(spark, DAY2, previous=day1[4], as_of=AS_OF + dt.timedelta(days=1))


def customers_with(mapping, *values: str) -> list[set[str]]:
    """The stitched customers holding any of ``values``."""
    return [c for c in customers_of(mapping) if c & set(values)]


def test_a_chain_of_rows_becomes_one_customer(day1):
    # a-b, b-c, c-d on three rows: one customer although no row holds a and d together.
    assert customers_with(day1[0], "b") == [{"a@x.com", "b", "c", "d@x.com"}]


def test_normalisation_joins_two_spellings_of_one_email(day1):
    assert customers_with(day1[0], "s1") == [{"ann@x.com", "s1", "sdev"}]


def test_placeholders_link_nobody(day1):
    assert customers_with(day1[0], "p1", "p2", "p3") == [{"p1"}, {"p2"}, {"p3"}]


def test_two_customers_sharing_only_a_guarded_device_stay_two(spark, day1):
    # The family tablet is seen with two CRM ids (limit 1): it is never an edge, keeps a key
    # of its own and is reported with its degree.
    assert customers_with(day1[0], "g1", "g2", "tablet") == [
        {"g1", "gus@x.com", "phone-gus"}, {"g2", "hal@x.com"}, {"tablet"}]  # fmt: skip
    assert day1[2] == [("tablet", CRM, 2)]
    # Without the guard the tablet merges them.
    mapping, *_ = stitch(spark, TABLET, identity=IdentityConfig(max_degree={}))
    assert len(customers_of(mapping)) == 1


def test_the_same_input_twice_gives_the_same_keys(day1):
    # A new customer's key depends on its oldest member only (first_seen, then type, then
    # identifier): the chain's is crm_id "b" (seen on day 1 with a@x.com; crm_id < email).
    digest = hashlib.sha256(b"crm_id\x1fb").hexdigest()[:20]
    assert day1[0][(CRM, "b")] == f"ck_{digest}"
    spellings = hashlib.sha256(b"crm_id\x1fs1").hexdigest()[:20]
    assert day1[0][(DEVICE, "sdev")] == f"ck_{spellings}"
    assert day1[1] == [] and all(len(k) == 23 for k in day1[0].values())


def test_a_new_edge_merging_two_customers_keeps_the_older_key_and_records_the_merge(day1, day2):
    older, younger = day1[0][(CRM, "e1")], day1[0][(EMAIL, "eve2@x.com")]
    assert older != younger
    merged = {day2[0][k] for k in [(CRM, "e1"), (EMAIL, "eve@x.com"), (EMAIL, "eve2@x.com"),
                                   (DEVICE, "ed2")]}  # fmt: skip
    assert merged == {older}
    assert ("merge", younger, older, 2) in day2[1]


def test_a_split_keeps_the_key_with_the_oldest_member_and_records_the_split(spark, day1, day2):
    key = day1[0][(CRM, "f1")]
    assert day1[0][(DEVICE, "fd9")] == key
    # fd9 splits off; f1 and fay@x.com hold the oldest member (first seen on day 1): they keep
    # the key, fd9 gets a new one.
    assert day2[0][(CRM, "f1")] == day2[0][(EMAIL, "fay@x.com")] == key
    new = day2[0][(DEVICE, "fd9")]
    assert new != key and ("split", key, new, 1) in day2[1]
    # The new key is not the one fd9 would get as a brand-new customer: salted by as_of.
    assert new != keys_of_fresh(spark, SPLIT_DAY1[2])


def keys_of_fresh(spark, row) -> str:
    mapping, *_ = stitch(spark, [row])
    return next(iter(mapping.values()))


def test_every_other_customer_keeps_its_key_and_nothing_else_changed(day1, day2):
    moved = {"e1", "eve@x.com", "eve2@x.com", "ed2", "fd9"}
    unchanged = {k: v for k, v in day1[0].items() if k[1] not in moved}
    assert {k: day2[0][k] for k in unchanged} == unchanged
    assert sorted(c[0] for c in day2[1]) == ["merge", "split"]


def test_a_chain_of_10000_identifiers_converges_in_few_rounds_or_on_the_driver(spark):
    """A chain of 10,000 identifiers, 300 paths of three and 100 loners: every node labelled
    with its component's smallest id, by distributed rounds only (``driver_max_edges`` 0), by
    rounds finished on the driver once few edges stay open, and on the driver from the start."""
    n, paths, loners = 10_000, 300, 100
    ids = spark.range(n + 3 * paths + loners).select(
        F.format_string("n%05d", "id").alias("v"), "id"
    )
    node = graph.node_id(F.lit("node"), F.col("v"))
    nodes = ids.select(node.alias(graph.NODE), "id")
    other = graph.node_id(F.lit("node"), F.format_string("n%05d", F.col("id") + 1))
    in_path = (F.col("id") >= n) & (F.col("id") < n + 3 * paths)
    linked = (F.col("id") < n - 1) | (in_path & ((F.col("id") - n) % 3 != 2))
    pair = ids.where(linked).select(node.alias("a"), other.alias("b"))
    edges = pair.select(F.greatest("a", "b").alias(graph.SRC), F.least("a", "b").alias(graph.DST))
    # Expected by construction: the chain is one component, each path one, each loner its own.
    group = (
        F.when(F.col("id") < n, F.lit(-1))
        .when(in_path, F.floor((F.col("id") - n) / 3))
        .otherwise(F.col("id"))
    )
    expected = {
        r[0]: r[1] for r in nodes.select(graph.NODE, F.min(graph.NODE).over(
            Window.partitionBy(group)).alias("c")).collect()
    }  # fmt: skip
    n_edges = n - 1 + 2 * paths
    runs = {}
    for limit in (0, n, 1_000_000):
        found = components.connected_components(
            nodes.select(graph.NODE), edges, max_iterations=60, driver_max_edges=limit
        )
        assert dict(found.labels.collect()) == expected, limit
        assert found.edges == n_edges
        runs[limit] = found
    rounds = runs[0]
    # O(log n) rounds (label propagation would need n), each recorded.
    assert 3 <= rounds.iterations <= 20 and rounds.driver_edges == 0
    assert len(rounds.edges_per_iteration) == rounds.iterations
    assert rounds.edges_per_iteration[-1] == 0  # every edge settled: a star on the root
    # The graph's 10,599 open edges are above 10,000: one distributed round, where the paths
    # become stars and settle, then the chain's 9,999 open edges are finished on the driver.
    hybrid = runs[n]
    assert (hybrid.iterations, hybrid.driver_edges) == (1, n - 1)
    whole = runs[1_000_000]
    assert (whole.iterations, whole.driver_edges) == (0, n_edges)


def test_not_converging_within_the_limit_is_a_clear_error(spark):
    nodes = spark.range(100).select(F.col("id").alias(graph.NODE))
    edges = spark.range(1, 100).select(F.col("id").alias(graph.SRC),
                                       (F.col("id") - 1).alias(graph.DST))  # fmt: skip
    with pytest.raises(InputError, match=r"did not converge in 1 rounds \(identity.max_iter"):
        components.connected_components(nodes, edges, max_iterations=1)


# --- configuration ---------------------------------------------------------------------------


def test_config_refuses_an_enabled_stitching_without_identifiers(tmp_path):
    with pytest.raises(ConfigError, match=r"identity\.identifiers lists no column"):
        local_config(tmp_path, "identity.enabled=true")
    with pytest.raises(ConfigError, match="must be lower-case"):
        local_config(tmp_path, "identity.enabled=true",
                     "identity.identifiers=[{column: e, type: E-Mail}]")  # fmt: skip
    cfg = local_config(tmp_path)
    assert cfg.stitching() is None  # the default: customer ids as they are
    assert local_config(tmp_path, "generator.identities=true").stitching() is not None
    own = local_config(tmp_path, "generator.identities=true", "input.events.path=/data/x")
    assert own.stitching() is None  # the sample's flag never stitches the user's events


# --- the job ---------------------------------------------------------------------------------


def _own_events(spark, path: Path, rows) -> None:
    schema = ("event_id string, customer_id string, event_time timestamp, amount double, "
              "email string, device string")  # fmt: skip
    spark.createDataFrame(rows, schema).write.mode("overwrite").parquet(str(path))


@pytest.fixture(scope="module")
def job(spark, tmp_path_factory):
    """The job twice on hand-made events (day 2 adds a row that links two customers), then
    the features of day 2 on the stitched key."""
    from segmentation.workflows import build_features, identities

    base = tmp_path_factory.mktemp("identity_job")
    events = base / "events"
    t = dt.datetime(2025, 6, 1, 10, tzinfo=dt.UTC)
    day1 = [
        ("e1", "c1", t, 10.0, "Ann@X.com ", "tab"), ("e2", None, t, 20.0, "ann@x.com", "p1"),
        ("e3", "c2", t, 30.0, None, "tab"), ("e4", "c3", t, 40.0, "cy@x.com", None),
        ("e5", None, t, 5.0, None, "tab"),
    ]  # fmt: skip
    cfg = local_config(
        base, f"input.events.path={events}", "input.events.format=parquet",
        *[f"input.events.columns.{c}=null" for c in ("event_type", "category", "channel",
                                                     "device", "quantity", "discount")],
        f"features.as_of={AS_OF}", "identity.enabled=true", "attitudes.enabled=false",
        "identity.max_component_size=3",
        "identity.identifiers=[{column: customer_id, type: crm_id}, {column: email, type: "
        "email}, {column: device, type: device_id}]",
    )  # fmt: skip
    _own_events(spark, events, day1)
    spark.catalog.clearCache()
    first = identities.run(spark, cfg)
    later = t + dt.timedelta(days=1)
    _own_events(spark, events, [*day1, ("e6", "c3", later, 1.0, None, "p1")])
    day2 = cfg.model_copy(update={"features": cfg.features.model_copy(
        update={"as_of": AS_OF + dt.timedelta(days=1)})})  # fmt: skip
    second = identities.run(spark, day2)
    # What the two runs persisted and did not release (Spark's cache manager: Delta's own
    # table states are not in it).
    leaked = not spark._jsparkSession.sharedState().cacheManager().isEmpty()
    features = build_features.run(spark, day2)
    return cfg, first, second, features, leaked


def test_the_job_releases_every_frame_it_persisted(job):
    """The identity job persists each input's identifier rows, the graph and the keys; a
    long-lived session (``make run`` runs it once per date) must not keep them."""
    assert not job[-1]


def _table(cfg, name) -> pl.DataFrame:
    return pl.read_delta(cfg.storage.table_path(name))


@pytest.mark.integration
def test_job_writes_the_map_guards_and_changes(job):
    cfg, first, second, *_ = job
    snapshots = _table(cfg, "identity_map").sort("identifier_type", "identifier")
    day1 = snapshots.filter(pl.col("as_of") == AS_OF)
    key = dict(zip(day1["identifier"], day1["customer_key"], strict=True))
    # c1, both spellings of ann@x.com and p1 are one customer; c2 another; the tablet, seen
    # with c1 and c2, is held back and keys itself (it alone on e5).
    assert key["c1"] == key["ann@x.com"] == key["p1"] != key["c2"]
    assert len({key["c1"], key["c2"], key["c3"], key["tab"]}) == 4
    assert (first.customers, first.shared, first.previous_as_of) == (4, 1, None)
    guards = _table(cfg, "identity_guards").filter(pl.col("as_of") == AS_OF)
    held = guards.filter(pl.col("reason") == "max_degree").row(0, named=True)
    assert (held["identifier"], held["linked_type"], held["degree"], held["limit"]) == (
        "tab", "crm_id", 2, 1)  # fmt: skip
    # Day 2: e6 links c3 to the device p1 (seen with ann@x.com): the two customers merge. Both
    # oldest members were first seen at t; the tie goes to (first_seen, type, identifier):
    # crm_id c1 < crm_id c3, so c1's key is kept and c3's is merged into it.
    day2 = snapshots.filter(pl.col("as_of") == AS_OF + dt.timedelta(days=1))
    key2 = dict(zip(day2["identifier"], day2["customer_key"], strict=True))
    assert key2["c3"] == key2["c1"] == key["c1"] and key2["c2"] == key["c2"]
    changes = _table(cfg, "identity_changes").to_dicts()
    assert [(c["change"], c["from_key"], c["to_key"], c["identifiers"]) for c in changes] == [
        ("merge", key["c3"], key["c1"], 2)]  # fmt: skip
    assert second.previous_as_of == AS_OF and second.merges == 1
    # The merged customer has 5 identifiers, above identity.max_component_size (3): reported.
    large = _table(cfg, "identity_guards").filter(
        (pl.col("reason") == "max_component_size") & (pl.col("as_of") == AS_OF + dt.timedelta(1))
    )
    assert large["customer_key"].to_list() == [key["c1"]] and large["component_size"][0] == 5


@pytest.mark.integration
def test_features_use_the_stitched_key_and_join_back_to_every_identifier(job):
    cfg, _, _, features, _ = job
    table = _table(cfg, "customer_features")
    snapshots = _table(cfg, "identity_map").filter(pl.col("as_of") == AS_OF + dt.timedelta(1))
    key = dict(zip(snapshots["identifier"], snapshots["customer_key"], strict=True))
    # e1, e2, e4, e6 are one customer (c1 + c3 merged); e3 is c2; e5 (the tablet alone) its own.
    frequency = dict(zip(table["customer_id"], table["frequency"], strict=True))
    assert frequency == {key["c1"]: 4, key["c2"]: 1, key["tab"]: 1}
    assert features.customers == 3
    # An activation tool reaches every raw identifier of a customer through identity_map.
    joined = table.join(snapshots, left_on="customer_id", right_on="customer_key")
    reach = joined.filter(pl.col("customer_id") == key["c1"])["identifier"].sort().to_list()
    assert reach == ["ann@x.com", "c1", "c3", "cy@x.com", "p1"]


def test_job_without_stitching_configured_is_a_clear_error(spark, tmp_path):
    from segmentation.workflows import identities

    with pytest.raises(InputError, match=r"identity stitching is not configured"):
        identities.run(spark, local_config(tmp_path))


@pytest.mark.integration
def test_features_with_stitching_on_but_no_map_name_the_command(spark, job, tmp_path):
    from segmentation.workflows import build_features

    cfg = job[0]
    other = cfg.model_copy(update={"features": cfg.features.model_copy(
        update={"as_of": dt.date(2025, 7, 31)})})  # fmt: skip
    with pytest.raises(InputError, match=r"no identity_map snapshot for 2025-07-31"):
        build_features.compute(spark, other, run_id="x")


@pytest.mark.integration
def test_keyed_staging_scans_the_normalised_events_once_and_releases_them(spark, job, monkeypatch):
    """The stitched key reads the normalised events twice (the identifier combinations, then
    the join back): staging persists them for its one pass, then releases them, and the
    staged rows are those of the unpersisted plan."""
    from segmentation.identity import stitched
    from segmentation.inputs import quality, sources

    cfg = job[0]
    day2 = cfg.model_copy(update={"features": cfg.features.model_copy(
        update={"as_of": AS_OF + dt.timedelta(days=1)})})  # fmt: skip
    seen = []
    stage_source = quality.stage_source

    def spy(source, **kwargs):
        seen.append(source.scanned_twice.is_cached)
        return stage_source(source, **kwargs)

    monkeypatch.setattr(quality, "stage_source", spy)
    earliest, latest = quality.bounds(day2)
    source = stitched.events(spark, day2)
    assert source.scanned_twice is not None
    staged = stitched.stage(spark, day2, source, earliest=earliest, latest=latest)
    assert seen == [True] and not source.scanned_twice.is_cached
    got = sorted(tuple(r) for r in staged.rows.drop(sources.RAW).collect())
    staged.release()
    monkeypatch.setattr(quality, "stage_source", stage_source)
    plain = stitched.stage(spark, day2, dataclasses.replace(source, scanned_twice=None),
                           earliest=earliest, latest=latest)  # fmt: skip
    assert got == sorted(tuple(r) for r in plain.rows.drop(sources.RAW).collect())
    assert len(got) == 6  # e1-e6
    plain.release()


def _written(cfg, as_of) -> dict[str, list[dict]]:
    """The three identity tables' rows of one snapshot, without their run ids, sorted."""
    rows = {}
    for name in ("identity_map", "identity_guards", "identity_changes"):
        table = _table(cfg, name).filter(pl.col("as_of") == as_of)
        rows[name] = table.drop("run_id", strict=False).sort(pl.all()).to_dicts()
    return rows


@pytest.fixture(scope="module")
def carried(spark, job):
    """As ``make run`` does, in one ``sightings.sharing`` block over unchanged input: day 2's
    features staged, day 2's snapshot carried forward to day 6 (no event after day 2), then
    day 6 stitched for real (day 1's result is not the latest snapshot before day 6)."""
    from segmentation.workflows import identities
    from segmentation.workflows.local_pipeline import at

    cfg, first, second, *_ = job
    day2, day6 = AS_OF + dt.timedelta(days=1), AS_OF + dt.timedelta(days=5)
    identity = cfg.stitching()
    spark.catalog.clearCache()
    with sightings.sharing():
        june = [dt.date(2025, 6, d) for d in (1, 2)]
        # e6 (June 2) is seen after June 1, nothing after June 2; as of June 1 it is not seen.
        seen = (sightings.seen_after(spark, at(cfg, day6), identity, june[0]),
                sightings.seen_after(spark, at(cfg, day6), identity, june[1]),
                sightings.seen_after(spark, at(cfg, june[0]), identity, june[0]))  # fmt: skip
        read = sightings.normalised_events(spark, cfg, identity)
        shared = (read.shared, read.frame.is_cached,
                  sightings.normalised_events(spark, cfg, identity) is read)  # fmt: skip
        staged_rows = _staged_rows(spark, at(cfg, day2))
        carried = identities.run(spark, at(cfg, day6), unchanged_since=second)
        carried_rows = _written(cfg, day6)
        restitched = identities.run(spark, at(cfg, day6), unchanged_since=first)
        restitched_rows = _written(cfg, day6)
    leaked = not spark._jsparkSession.sharedState().cacheManager().isEmpty()
    alone_rows = _staged_rows(spark, at(cfg, day2))
    return {
        "seen": seen, "shared": shared, "staged": (staged_rows, alone_rows),
        "runs": (second, carried, restitched), "rows": (carried_rows, restitched_rows),
        "day2": _written(cfg, day2), "leaked": leaked,
    }  # fmt: skip


def _staged_rows(spark, cfg) -> list[tuple]:
    """The events as the feature job stages them (keyed), sorted."""
    from segmentation.identity import stitched
    from segmentation.inputs import quality

    earliest, latest = quality.bounds(cfg)
    staged = stitched.stage(spark, cfg, stitched.events(spark, cfg), earliest=earliest,
                            latest=latest)  # fmt: skip
    try:
        return sorted(tuple(r) for r in staged.rows.drop("raw_values").collect())
    finally:
        staged.release()


@pytest.mark.integration
def test_a_snapshot_carried_forward_equals_the_stitching_of_its_date(job, carried):
    """``make run``'s scored date: with no event seen after the training date, the training
    date's snapshot written again under the scored date is what stitching that date gives
    (the map, the guards, no changes), and the result's counts are the stitching's."""
    from segmentation.workflows import summaries

    second, moved, restitched = carried["runs"]
    day2 = AS_OF + dt.timedelta(days=1)
    assert carried["seen"] == ("events", None, None)
    assert (moved.carried_from, restitched.carried_from) == (day2, None)
    assert (moved.previous_as_of, restitched.previous_as_of) == (day2, day2)
    got, want = carried["rows"]
    assert got == want
    # Not vacuous: the merged customer, the held-back tablet and the large component.
    assert len(want["identity_map"]) == len(carried["day2"]["identity_map"]) == 7
    assert [r["reason"] for r in want["identity_guards"]] == ["max_component_size", "max_degree"]
    assert want["identity_changes"] == []
    same = ("customers", "identifiers", "edges", "kept_keys", "new_keys", "merges", "splits",
            "shared", "large", "sizes", "counts", "shared_examples", "large_examples")  # fmt: skip
    assert {f: getattr(moved, f) for f in same} == {f: getattr(restitched, f) for f in same}
    assert moved.kept_keys == moved.customers == second.customers
    text = summaries.identity(moved, job[0])
    assert f"carried forward from the snapshot of {day2}" in text
    assert f"keys against {day2}: {moved.customers} kept, 0 new; 0 merge(s)" in text


@pytest.mark.integration
def test_one_normalised_read_of_the_events_serves_every_date_and_is_released(carried):
    """In ``sightings.sharing`` the events' identifiers are normalised once and persisted; the
    keyed staging read from it equals the one read alone, and the block's end releases it."""
    assert carried["shared"] == (True, True, True)
    staged, alone = carried["staged"]
    assert staged == alone and len(staged) == 6
    assert not carried["leaked"]


@pytest.mark.integration
def test_edge_times_are_read_in_their_format_and_never_guessed_undated(spark, job, tmp_path):
    """``identity.edges.time`` as ``identity.edges.timestamp_format`` says: a link after
    ``as_of`` is left out (and seen after an earlier date); a time that does not parse, or a
    numeric column without an epoch format, is an error naming the keys, not an undated link."""
    from segmentation.workflows.local_pipeline import at

    cfg = job[0]

    def edges_cfg(rows, schema, **settings):
        path = tmp_path / f"edges{len(list(tmp_path.iterdir()))}"
        spark.createDataFrame(rows, schema).write.parquet(str(path))
        edges = cfg.identity.edges.model_copy(update={
            "path": str(path), "format": "parquet", "time": "at", **settings,
            "identifiers": (Identifier(column="cookie", type="anonymous_id"),
                            Identifier(column="crm", type="crm_id"))})  # fmt: skip
        return cfg.model_copy(update={"identity": cfg.identity.model_copy(
            update={"edges": edges})})  # fmt: skip

    text = edges_cfg([("k1", "c1", "02/06/2025 10:00"), ("k2", "c2", "03/07/2025 09:00"),
                      ("k3", "c3", " ")], "cookie string, crm string, at string",
                     timestamp_format="dd/MM/yyyy HH:mm")  # fmt: skip
    identity = text.stitching()
    seen = sightings.read(spark, text, identity)
    try:
        edges = [c for c in seen.counts if c.source == "edges"]
        # k2 (July 3) is after as_of (June 30); k3's blank time is missing: an undated link.
        assert [(c.column, c.identifiers) for c in edges] == [("cookie", 2), ("crm", 2)]
    finally:
        seen.unpersist()
    assert sightings.seen_after(spark, at(text, dt.date(2025, 7, 3)), identity,
                                dt.date(2025, 7, 2)) == "edges"  # fmt: skip
    bad = edges_cfg(
        [("k1", "c1", "02/06/2025 10:00"), ("k2", "c2", "not a time")],
        "cookie string, crm string, at string",
        timestamp_format="dd/MM/yyyy HH:mm",
    )
    with pytest.raises(InputError, match=r"'at' \(identity.edges.time\).*'not a time'"):
        sightings.read(spark, bad, bad.stitching())
    numbers = [("k1", "c1", 1748772000)]  # 2025-06-01 10:00 UTC
    epoch = edges_cfg(numbers, "cookie string, crm string, at long")
    with pytest.raises(InputError, match=r"identity.edges.time is numeric: set "
                                         r"identity.edges.timestamp_format"):  # fmt: skip
        sightings.read(spark, epoch, epoch.stitching())
    epoch = edges_cfg(
        numbers, "cookie string, crm string, at long", timestamp_format="epoch_seconds"
    )
    seen = sightings.read(spark, epoch, epoch.stitching())
    try:
        k1 = seen.rows.where(F.exists(sightings.IDS, lambda x: x[sightings.VALUE] == "k1"))
        # The session's time zone is UTC: instants come back as naive UTC times.
        assert [r["seen"] for r in k1.collect()] == [dt.datetime(2025, 6, 1, 10)]
    finally:
        seen.unpersist()


@pytest.mark.integration
def test_a_row_without_a_known_identifier_is_quarantined_with_its_raw_ids(spark, job, tmp_path):
    """With stitching, a row's customer is the key of its identifiers: a blank customer_id
    with a known email is that email's customer; an id the map does not hold, with no other
    identifier, has no customer (unknown_identifier) and keeps its raw values; a row with no
    identifier at all (an email that normalises to nothing) is missing_customer_id; an event
    after as_of with an unknown id is unknown_identifier_after_as_of, which the rejected share
    does not count (its own day's map will know the id)."""
    from segmentation.errors import InputError
    from segmentation.identity import stitched
    from segmentation.inputs import quality
    from segmentation.runtime import tracking
    from segmentation.workflows import build_features

    cfg = job[0]
    day2 = AS_OF + dt.timedelta(days=1)
    t = dt.datetime(2025, 6, 2, 9, tzinfo=dt.UTC)
    _own_events(spark, tmp_path / "events", [
        ("n1", None, t, 7.0, " ANN@x.com", None), ("n2", "zz", t, 3.0, "n/a", None),
        ("n3", " ", t, 2.0, "n/a", None),
        ("n4", "zz2", dt.datetime(2025, 7, 2, 9, tzinfo=dt.UTC), 1.0, None, None),
    ])  # fmt: skip
    other = cfg.model_copy(update={
        "features": cfg.features.model_copy(update={"as_of": day2}),
        "input": cfg.input.model_copy(update={"events": cfg.input.events.model_copy(
            update={"path": str(tmp_path / "events")})}),
        "quality": cfg.quality.model_copy(update={"max_reject_share": 0.9}),
    })  # fmt: skip
    keys = _table(cfg, "identity_map").filter(pl.col("as_of") == day2)
    key = dict(zip(keys["identifier"], keys["customer_key"], strict=True))
    events = stitched.clean_events(spark, other)
    try:
        assert [(r["event_id"], r["customer_id"]) for r in events.clean.collect()] == [
            ("n1", key["ann@x.com"])]  # fmt: skip
        rejected = sorted(quality.split_staged(events.staged).rejected.collect(),
                          key=lambda r: r["event_id"])  # fmt: skip
        assert [(r["event_id"], r[quality.REASON]) for r in rejected] == [
            ("n2", "unknown_identifier"), ("n3", "missing_customer_id"),
            ("n4", "unknown_identifier_after_as_of")]  # fmt: skip
        assert rejected[0]["raw_values"]["customer_id"] == "zz"
        assert rejected[0]["raw_values"]["email"] == "n/a"
    finally:
        events.release()
    with tracking.run(tracking.configure(other.tracking), "rejected share"):
        # 9 rows after as_of are not counted: 1 of 10 is within a 10% share; 2 are not.
        after = {"unknown_identifier_after_as_of": 9, "unknown_identifier": 1}
        build_features._check_rejected(after, 10, max_share=0.1)
        with pytest.raises(InputError, match="2 of 10 input events"):
            build_features._check_rejected({**after, "unknown_identifier": 2}, 10, max_share=0.1)
