"""Audiences, consent, holdout groups, the change feed and campaign measurement, on a hand-made
world: membership snapshots of two dates written by hand, consent and suppression records with
known answers, events with a planted campaign effect.

Every expectation is computed here from the world's definition (and the group hash again with
hashlib), never read back from the code under test.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from deltalake import DeltaTable as RustDeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.activation import consent, groups, measurement
from segmentation.config import AppConfig
from segmentation.errors import ConfigError, InputError
from segmentation.storage import delta_tables, tables
from segmentation.workflows import audiences, campaigns
from tests.conftest import browser_render, local_config

pytestmark = pytest.mark.integration

D1, D2 = dt.date(2025, 6, 30), dt.date(2025, 9, 30)
LAUNCH, DAYS = D2, 30
N = 3000
SALT, GLOBAL = "test-salt", 0.05
NAMES = {0: "A", 1: "B", 2: "C"}
EMAIL_HOLDOUT, SMS_HOLDOUT = 0.2, 0.1
# Consent cases (all in segment A on both dates): id -> expected outcome at D1.
OPTED_OUT_LATER, OPTED_BACK_IN, NO_EMAIL_RECORD = "c0006", "c0009", "c0012"
SAME_INSTANT, CONSENT_AFTER_D1, SUPPRESSED_ALL, SUPPRESSED_SMS = "c0015", "c0018", "c0021", "c0024"
SPECIAL = {OPTED_OUT_LATER, OPTED_BACK_IN, NO_EMAIL_RECORD, SAME_INSTANT, CONSENT_AFTER_D1}


def cid(i: int) -> str:
    return f"c{i:04d}"


def segment_at(i: int, day: dt.date) -> int | None:
    """The world's membership: i % 3 at D1; at D2 some move, leave or join."""
    if i >= N:
        return 0 if day == D2 else None
    seg = i % 3
    if day == D2:
        if i % 30 == 0:
            return 1  # A -> B: leaves the email audience
        if i % 30 == 3:
            return 2  # A -> C: moves within it
        if i % 30 == 1:
            return 0  # B -> A: joins it
        if i % 30 == 2:
            return None  # C: no longer scored, leaves
    return seg


def ids_at(day: dt.date) -> list[int]:
    return [i for i in range(N + 30) if segment_at(i, day) is not None]


def expected_group(audience: str, customer: str, holdout: float) -> str:
    if groups.unit_interval(SALT, "__global__", customer) < GLOBAL:
        return "global_holdout"
    return "holdout" if groups.unit_interval(SALT, audience, customer) < holdout else "treatment"


def email_status(customer: str, day: dt.date) -> str | None:
    """The expected exclusion reason for the email audience at ``day`` (None: a member)."""
    if customer == SUPPRESSED_ALL:
        return "suppressed"
    if customer in (OPTED_OUT_LATER, SAME_INSTANT):
        return "opted_out"
    if customer == NO_EMAIL_RECORD or (customer == CONSENT_AFTER_D1 and day < dt.date(2025, 8, 1)):
        return "no_consent"
    return None


def _consent_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for i in range(N + 30):
        c = cid(i)
        if c not in SPECIAL:
            rows.append((c, " Email ", " Opt_In ", "2024-01-01 10:00:00"))
        if i % 2 == 0:
            rows.append((c, "sms", "subscribed", "2024-02-01 10:00:00"))
    rows += [
        (OPTED_OUT_LATER, "email", "opt_in", "2024-01-01 10:00:00"),
        (OPTED_OUT_LATER, "email", "opt_out", "2025-03-01 09:00:00"),
        (OPTED_BACK_IN, "email", "unsubscribed", "2023-01-01 10:00:00"),
        (OPTED_BACK_IN, "email", "opt_in", "2024-06-01 10:00:00"),
        (SAME_INSTANT, "email", "opt_in", "2024-05-05 05:05:05"),
        (SAME_INSTANT, "email", "opt_out", "2024-05-05 05:05:05"),
        (CONSENT_AFTER_D1, "email", "opt_in", "2025-08-01 12:00:00"),
    ]
    return rows


def _write_snapshot(spark: SparkSession, cfg: AppConfig, day: dt.date) -> None:
    rows = [(cid(i), day, segment_at(i, day), NAMES[segment_at(i, day)], 0.0, "customer_segments",
             1, "r", dt.datetime(2025, 1, 1)) for i in ids_at(day)]  # fmt: skip
    df = spark.createDataFrame(rows, schema=tables.MEMBERSHIP_SCHEMA)
    snap = {tables.MODEL_NAME: "customer_segments", tables.AS_OF: day}
    tables.snapshot_write(spark, cfg.storage, tables.MEMBERSHIP, df, job="test", run_id="r",
                          snapshot=snap).call()  # fmt: skip
    feats = spark.createDataFrame([(cid(i), float(i % 5), day) for i in ids_at(day)],
                                  "customer_id string, frequency double, as_of date")  # fmt: skip
    tables.snapshot_write(spark, cfg.storage, tables.FEATURES, feats, job="test", run_id="r",
                          snapshot={tables.AS_OF: day}).call()  # fmt: skip


def _events(spark: SparkSession, base: Path, history_groups: dict[str, tuple[int, str]]) -> str:
    """One order per customer before D1; after the launch, orders with a planted lift: segment
    A converts at 0.30 treated vs 0.15 held out, segment C at 0.20 in both."""
    rng = np.random.default_rng(7)
    rows: list[tuple[Any, ...]] = []
    for i in range(N + 30):
        rows.append((cid(i), dt.datetime(2025, 1, 15, 12), 30.0, "order"))
    for c, (seg, group) in sorted(history_groups.items()):
        p = {0: 0.30 if group == "treatment" else 0.15, 2: 0.20}[seg]
        if rng.random() < p:
            rows.append((c, dt.datetime(2025, 10, 10, 12), 50.0, "order"))
    rows.append((cid(1), dt.datetime(2025, 11, 5, 12), 5.0, "visit"))
    df = spark.createDataFrame(
        [(*r, "home", "web", "desktop", 1.0, 0.0, f"e{n}") for n, r in enumerate(rows)],
        "customer_id string, event_time timestamp, amount double, event_type string, "
        "category string, channel string, device string, quantity double, discount double, "
        "event_id string",
    )
    path = str(base / "events")
    df.write.format("delta").save(path)
    return path


@pytest.fixture(scope="module")
def world(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("activation")
    columns = "customer_id string, channel string, status string, updated_at string"
    spark.createDataFrame(_consent_rows(), columns).write.format("delta").save(
        str(base / "consent")
    )
    spark.createDataFrame([(SUPPRESSED_ALL, None), (SUPPRESSED_SMS, "sms"), ("c0021.0", None)],
                          "customer_id string, channel string").write.format("delta").save(
        str(base / "suppression"))  # fmt: skip
    definitions = (
        "[{name: email_ac, segments: [A, 2], channel: email, holdout_share: 0.2}, "
        "{name: sms_b, segments: [B], channel: SMS, holdout_share: 0.1, "
        "condition: 'frequency >= 2'}]"
    )
    overrides = [
        f"audiences.definitions={definitions}", f"audiences.salt={SALT}",
        f"audiences.global_holdout_share={GLOBAL}",
        f"audiences.consent.path={base / 'consent'}",
        f"audiences.suppression.path={base / 'suppression'}",
        "audiences.suppression.channel=channel", "audiences.export.format=csv",
        "value.enabled=false", "spark.shuffle_partitions=2",
    ]  # fmt: skip
    cfg = local_config(base, *overrides)
    for day in (D1, D2):
        _write_snapshot(spark, cfg, day)
    return {"base": base, "cfg": cfg}


def at(cfg: AppConfig, day: dt.date) -> AppConfig:
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"as_of": day})})


def members(spark: SparkSession, cfg: AppConfig, audience: str) -> dict[str, dict[str, Any]]:
    rows = tables.read(spark, cfg.storage, tables.AUDIENCE_MEMBERS).where(
        F.col("audience") == audience
    )
    return {r["customer_id"]: r.asDict() for r in rows.collect()}


def changes(spark: SparkSession, cfg: AppConfig, start: int, end: int) -> dict[str, set[str]]:
    path = tables.path(cfg.storage, tables.AUDIENCE_MEMBERS)
    feed = (spark.read.format("delta").option("readChangeFeed", "true")
            .option("startingVersion", start).option("endingVersion", end).load(path)
            .where(F.col("audience") == "email_ac").collect())  # fmt: skip
    out: dict[str, set[str]] = {}
    for r in feed:
        out.setdefault(r["_change_type"], set()).add(r["customer_id"])
    return out


def test_first_build_consent_groups_and_readers(spark: SparkSession, world: dict[str, Any]) -> None:
    cfg = at(world["cfg"], D1)
    result = audiences.run(spark, cfg)
    got = members(spark, cfg, "email_ac")
    candidates = [cid(i) for i in ids_at(D1) if segment_at(i, D1) in (0, 2)]
    expected = {c: expected_group("email_ac", c, EMAIL_HOLDOUT) for c in candidates
                if email_status(c, D1) is None}  # fmt: skip
    assert {c: r["group"] for c, r in got.items()} == expected
    counts = {c.name: c for c in result.audiences}["email_ac"]
    reasons = [email_status(c, D1) for c in candidates]
    assert counts.excluded == {"suppressed": 1, "opted_out": 2, "no_consent": 2}
    # An id written unlike the events' ids suppresses nobody: said, not silently dropped.
    assert result.unmatched["suppression"] == (3, 1, ["c0021.0"])
    assert any("1 of 3 suppression customer ids match no scored customer" in w
               for w in result.warnings)  # fmt: skip
    assert counts.excluded["no_consent"] == reasons.count("no_consent")
    assert OPTED_BACK_IN in got and SUPPRESSED_SMS in got
    assert {r["since"] for r in got.values()} == {D1} and got[cid(0)]["segment_name"] == "A"
    # sms: segment B with frequency >= 2, consent on even ids, SUPPRESSED_SMS is in A anyway.
    sms = members(spark, cfg, "sms_b")
    want = {cid(i) for i in ids_at(D1) if i % 3 == 1 and i % 5 >= 2 and i % 2 == 0}
    assert set(sms) == want and {r["channel"] for r in sms.values()} == {"sms"}
    # An independent reader (delta-rs) sees the same rows; the feed of the first MERGE: inserts.
    rust = RustDeltaTable(tables.path(cfg.storage, tables.AUDIENCE_MEMBERS)).to_pyarrow_table()
    pairs = zip(rust["audience"].to_pylist(), rust["customer_id"].to_pylist(), strict=True)
    assert sorted(c for a, c in pairs if a == "email_ac") == sorted(expected)
    version = delta_tables.version(spark, tables.path(cfg.storage, tables.AUDIENCE_MEMBERS))
    assert version is not None
    first = changes(spark, cfg, 0, version)
    assert set(first) == {"insert"} and first["insert"] == set(expected)
    # The export: the treatment group only, ids, segment and channel.
    exported = spark.read.option("header", "true").csv(str(counts.export)).collect()
    assert {r["customer_id"] for r in exported} == {c for c, g in expected.items()
                                                    if g == "treatment"}  # fmt: skip
    assert set(exported[0].asDict()) == {"customer_id", "segment_id", "segment_name", "channel",
                                         "as_of"}  # fmt: skip
    world["v1"] = version


def test_rebuild_is_no_change_and_rescoring_moves_feed(
    spark: SparkSession, world: dict[str, Any]
) -> None:
    # The email audience alone from here on (sms_b stays as built on D1, named as stale).
    email = next(a for a in world["cfg"].audiences.definitions if a.name == "email_ac")
    cfg = world["cfg"].model_copy(update={"audiences": world["cfg"].audiences.model_copy(
        update={"definitions": (email,)})})  # fmt: skip
    path = tables.path(cfg.storage, tables.AUDIENCE_MEMBERS)
    v1 = world["v1"]
    replay = audiences.run(spark, at(cfg, D1))  # the same date again: nothing changes
    v_replay = delta_tables.version(spark, path)
    assert v_replay is not None and changes(spark, cfg, v1 + 1, v_replay) == {}
    assert any("['sms_b']" in w for w in replay.warnings)
    audiences.run(spark, at(cfg, D2))
    v2 = delta_tables.version(spark, path)
    assert v2 is not None
    feed = changes(spark, cfg, v_replay + 1, v2)
    in_d1 = {cid(i) for i in ids_at(D1) if segment_at(i, D1) in (0, 2)
             and email_status(cid(i), D1) is None}  # fmt: skip
    in_d2 = {cid(i) for i in ids_at(D2) if segment_at(i, D2) in (0, 2)
             and email_status(cid(i), D2) is None}  # fmt: skip
    moved = {c for c in in_d1 & in_d2 if segment_at(int(c[1:]), D1) != segment_at(int(c[1:]), D2)}
    assert feed.get("insert", set()) == in_d2 - in_d1
    assert CONSENT_AFTER_D1 in feed["insert"]
    assert feed.get("delete", set()) == in_d1 - in_d2
    assert feed.get("update_postimage", set()) == moved and moved
    now = members(spark, cfg, "email_ac")
    assert now[cid(3)]["since"] == D1 and now[cid(3)]["segment_id"] == 2
    assert now[cid(1)]["since"] == D2
    # The SCD2 history: customer 3 moved A -> C at D2.
    hist = (
        tables.read(spark, cfg.storage, tables.AUDIENCE_HISTORY)
        .where((F.col("audience") == "email_ac") & (F.col("customer_id") == cid(3)))
        .orderBy("valid_from")
        .collect()
    )
    assert [(r["segment_id"], r["valid_from"], r["valid_to"]) for r in hist] == [
        (0, D1, D2), (2, D2, None)]  # fmt: skip
    world["groups_d2"] = {c: (r["segment_id"], r["group"]) for c, r in now.items()}


def test_backfill_and_bad_audiences_change_nothing(
    spark: SparkSession, world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cfg = world["cfg"]
    paths = [tables.path(cfg.storage, t) for t in (tables.AUDIENCE_MEMBERS,
                                                   tables.AUDIENCE_HISTORY)]  # fmt: skip
    before = [delta_tables.version(spark, p) for p in paths]
    with pytest.raises(InputError, match=r"email_ac was last built as of 2025-09-30"):
        audiences.run(spark, at(cfg, D1))
    bad = [
        ("[{name: x, segments: [Z, 1]}]", r"\['Z'\] is not a segment of customer_segments"),
        ("[{name: x, segments: [1], condition: 'no_such > 1'}]", r"x\].condition.*no_such"),
        ("[{name: x, segments: [1], condition: 'frequency + 1'}]", r"is a double, not a true"),
    ]
    for definitions, message in bad:
        bad_cfg = local_config(world["base"], *_overrides(world), f"audiences.definitions="
                               f"{definitions}", f"features.as_of={D2}")  # fmt: skip
        with pytest.raises(InputError, match=message):
            audiences.run(spark, bad_cfg)
    assert [delta_tables.version(spark, p) for p in paths] == before
    # One ERROR line for the user, no Java stack logged before it.
    assert not [r for r in caplog.records if r.name == "SQLQueryContextLogger"]
    # An audience dropped from the configuration is named, with how to retire it.
    email_only = "audiences.definitions=[{name: email_ac, segments: [A, 2]}]"
    only_email = local_config(world["base"], *_overrides(world), email_only)
    (stale,) = audiences._stale(spark, only_email)
    assert "['sms_b']" in stale and "DELETE FROM delta." in stale
    with pytest.raises(ConfigError, match=r"holdout_share must be in \[0, 0.5\]"):
        local_config(world["base"], "audiences.definitions=[{name: x, segments: [1], "
                     "holdout_share: 0.7}]")  # fmt: skip
    with pytest.raises(ConfigError, match=r"model_name 'nope' is not a segmentation"):
        local_config(world["base"], "audiences.definitions=[{name: x, segments: [1], "
                     "model_name: nope}]")  # fmt: skip
    strict = local_config(world["base"], "audiences.require_consent=true",
                          "audiences.definitions=[{name: x, segments: [1]}]")  # fmt: skip
    with pytest.raises(InputError, match="require_consent is true but no consent input"):
        audiences.run(spark, strict.model_copy(update={"input": _own_events(strict)}))


def _overrides(world: dict[str, Any]) -> list[str]:
    cfg = world["cfg"]
    return [f"audiences.consent.path={cfg.audiences.consent.path}",
            f"audiences.suppression.path={cfg.audiences.suppression.path}",
            "value.enabled=false"]  # fmt: skip


def _own_events(cfg: AppConfig) -> Any:
    """An input section naming the user's events: no sample consent table is assumed."""
    events = cfg.input.events.model_copy(update={"path": "/nonexistent/events"})
    return cfg.input.model_copy(update={"events": events})


def test_campaign_lift_srm_page_and_errors(
    spark: SparkSession, world: dict[str, Any], tmp_path: Path
) -> None:
    cfg0 = world["cfg"]
    planted = {c: g for c, g in world["groups_d2"].items()}
    path = _events(spark, world["base"], planted)
    events = cfg0.input.events.model_copy(update={"path": path})
    cfg = cfg0.model_copy(update={"input": cfg0.input.model_copy(update={"events": events})})
    result = campaigns.run(spark, cfg, audience="email_ac", launch=str(LAUNCH), days=DAYS)
    by = {r.segment_name: r for r in result.results}
    # Counts by hand from the planted groups.
    for name, seg in (("A", 0), ("C", 2)):
        treated = [c for c, (s, g) in planted.items() if s == seg and g == "treatment"]
        held = [c for c, (s, g) in planted.items() if s == seg and g != "treatment"]
        assert (by[name].treatment.n, by[name].holdout.n) == (len(treated), len(held))
    lift_a, lift_c = by["A"].conversion, by["C"].conversion
    assert lift_a.absolute_lower > 0 and lift_a.absolute_lower < 0.15 < lift_a.absolute_upper
    assert lift_c.absolute_lower < 0 < lift_c.absolute_upper
    assert by["A"].revenue.absolute_lower > 0 and "sample_ratio_mismatch" not in by["A"].notes
    # The power note by hand: 80% power, two-sided 5%, against a 10% relative lift.
    for r in by.values():
        p, nt, nh = r.holdout.rate, r.treatment.n, r.holdout.n
        mde = (1.959964 + 0.841621) * math.sqrt(p * (1 - p) * (1 / nt + 1 / nh))
        assert math.isclose(r.minimum_detectable, mde, rel_tol=1e-5)
        assert ("underpowered" in r.notes) == (mde > 0.1 * p)
    assert math.isclose(by["A"].revenue.absolute, 50 * lift_a.absolute, rel_tol=1e-9)
    rows = tables.read(spark, cfg.storage, tables.CAMPAIGN_RESULTS).collect()
    assert len(rows) == 6 and {r["segment_name"] for r in rows} == {"A", "C", "all"}
    page = browser_render(Path(result.paths["page"]), tmp_path / "page.png",
                          rows=["#conversion", "#revenue_per_customer"])  # fmt: skip
    assert page["errors"] == [] and page["rows"] == {"#conversion": 3,
                                                     "#revenue_per_customer": 3}  # fmt: skip
    version = tables.version(spark, cfg.storage, tables.CAMPAIGN_RESULTS)
    with pytest.raises(InputError, match="no events after the launch date 2025-11-30"):
        campaigns.run(spark, cfg, audience="email_ac", launch="2025-11-30", days=10)
    with pytest.raises(InputError, match="has no build on or before the launch 2025-01-01"):
        campaigns.run(spark, cfg, audience="email_ac", launch="2025-01-01", days=10)
    assert tables.version(spark, cfg.storage, tables.CAMPAIGN_RESULTS) == version
    # A deliberately broken split: the same arms against a holdout share they were not drawn
    # with fail the sample-ratio test; against the true one (0.2 + 0.05 - 0.01) they pass.
    arms = [{"segment_id": r.segment_id, "segment_name": r.segment_name, "treated": treated,
             "n": arm.n, "conversions": arm.conversions, "revenue_sum": arm.revenue_sum,
             "revenue_sum_squares": arm.revenue_sum_squares}
            for r in result.results if r.segment_id is not None
            for treated, arm in ((True, r.treatment), (False, r.holdout))]  # fmt: skip
    mc = cfg.audiences.measurement
    broken = measurement.compare(arms, expected_holdout=0.5, mc=mc)
    assert all("sample_ratio_mismatch" in r.notes for r in broken)
    assert result.expected_holdout == pytest.approx(0.2 + 0.05 - 0.2 * 0.05)
    assert all("sample_ratio_mismatch" not in r.notes for r in result.results)


def test_holdout_share_per_segment_within_binomial_bounds(spark: SparkSession) -> None:
    n = 100_000
    rows = spark.range(n).select(
        F.concat(F.lit("cust-"), F.col("id").cast("string")).alias("customer_id"),
        (F.col("id") % 4).alias("segment"),
    )
    a = groups.group(SALT, "aud_a", 0.1, 0.0).alias("a")
    b = groups.group(SALT, "aud_b", 0.3, 0.0).alias("b")
    per = (rows.select("segment", a, b).groupBy("segment")
           .agg(F.count(F.lit(1)).alias("n"), F.count_if(F.col("a") == "holdout").alias("ha"),
                F.count_if((F.col("a") == "holdout") & (F.col("b") == "holdout")).alias("both"))
           .collect())  # fmt: skip
    for r in per:
        m = r["n"]
        for share, count in ((0.1, r["ha"]), (0.03, r["both"])):  # independent: 0.1 x 0.3
            assert abs(count / m - share) <= 4 * math.sqrt(share * (1 - share) / m)
    sample = rows.limit(50).select("customer_id", a).collect()
    for r in sample:
        u = groups.unit_interval(SALT, "aud_a", r["customer_id"])
        assert r["a"] == ("holdout" if u < 0.1 else "treatment")


def test_consent_per_address_with_stitching(spark: SparkSession, tmp_path: Path) -> None:
    """An opt-in on one address never overrides an opt-out on another of the same customer."""
    as_of = dt.date(2025, 6, 30)
    cfg = local_config(
        tmp_path, f"features.as_of={as_of}", "identity.enabled=true",
        "identity.identifiers=[{column: customer_id, type: crm_id}]",
        f"audiences.consent.path={tmp_path / 'consent'}",
        "audiences.consent.identifiers=[{column: email, type: email}]",
    )  # fmt: skip
    when = dt.datetime(2025, 1, 1)
    idmap = spark.createDataFrame(
        [("crm_id", "k1", "K1", when, when, as_of), ("email", "a@x.com", "K1", when, when, as_of),
         ("email", "b@x.com", "K1", when, when, as_of), ("crm_id", "k2", "K2", when, when, as_of),
         ("email", "c@x.com", "K2", when, when, as_of)],
        schema=tables.IDENTITY_MAP_SCHEMA,
    )  # fmt: skip
    tables.snapshot_write(spark, cfg.storage, tables.IDENTITY_MAP, idmap, job="t", run_id="r",
                          snapshot={tables.AS_OF: as_of}).call()  # fmt: skip
    guards = spark.createDataFrame([], schema=tables.IDENTITY_GUARDS_SCHEMA)
    tables.snapshot_write(spark, cfg.storage, tables.IDENTITY_GUARDS, guards, job="t",
                          run_id="r", snapshot={tables.AS_OF: as_of}).call()  # fmt: skip
    spark.createDataFrame(
        [("k1", "a@x.com", "email", "opt_in", "2025-03-01 10:00:00"),
         ("k1", " B@X.com ", "email", "opt_out", "2025-01-01 10:00:00"),
         ("k2", "c@x.com", "email", "opt_in", "2025-02-01 10:00:00"),
         ("k2", None, "email", "opt_in", "2025-02-02 10:00:00")],
        "customer_id string, email string, channel string, status string, updated_at string",
    ).write.format("delta").save(str(tmp_path / "consent"))  # fmt: skip
    got = consent.permissions(spark, cfg).consent
    assert got is not None
    assert {(r["customer_id"], r["consented"]) for r in got.collect()} == {
        ("K1", False), ("K2", True)}  # fmt: skip


def test_a_group_too_small_for_an_interval_is_noted() -> None:
    """One held-out customer: no interval, no minimum detectable lift, noted underpowered."""
    rows = [
        {"segment_id": 1, "segment_name": "A", "treated": True, "n": 7, "conversions": 3,
         "revenue_sum": 150.0, "revenue_sum_squares": 7500.0},
        {"segment_id": 1, "segment_name": "A", "treated": False, "n": 1, "conversions": 0,
         "revenue_sum": 0.0, "revenue_sum_squares": 0.0},
    ]  # fmt: skip
    mc = local_config(Path("/tmp/unused")).audiences.measurement
    (segment, _) = measurement.compare(rows, expected_holdout=0.2, mc=mc)
    assert math.isnan(segment.revenue.absolute_lower) and math.isnan(segment.minimum_detectable)
    assert "underpowered" in segment.notes
