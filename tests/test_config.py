"""Config loading: layering, overrides, and errors that name the key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from segmentation.config import load_config, mask_uri, to_dict, validate
from segmentation.errors import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text())
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    return overlay


def test_load_config_merges_base_overlay_and_overrides():
    cfg = load_config(
        CONF / "local.yaml", overrides=["training.k_max=7", "features.as_of=2024-06-30"]
    )
    assert cfg.training.k_max == 7
    assert cfg.features.as_of == dt.date(2024, 6, 30)
    assert cfg.features.categories is not None and "electronics" in cfg.features.categories
    assert cfg.training.algorithm == "kmeans"  # from base.yaml
    assert cfg.input.events.event_types.return_ == ("return", "refund")


def test_load_config_cluster_overlay_keeps_base_spark_conf_keys():
    cfg = load_config(CONF / "cluster.yaml")
    assert cfg.spark.master is None
    assert cfg.spark.conf["spark.sql.adaptive.enabled"] == "true"
    assert cfg.tracking.tracking_uri.startswith("http://")


def test_load_config_rejects_unknown_key(tmp_path):
    overlay = write(tmp_path, "training:\n  k_maxx: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'training.k_maxx'"):
        load_config(overlay)


def test_load_config_rejects_wrong_type_naming_key(tmp_path):
    overlay = write(tmp_path, "training:\n  k_max: many\n")
    with pytest.raises(ConfigError, match=r"'training.k_max' must be an integer"):
        load_config(overlay)


def test_load_config_rejects_empty_k_range():
    with pytest.raises(ConfigError, match=r"training.k_max \(3\) must be >= k_min \(5\)"):
        load_config(CONF / "local.yaml", overrides=["training.k_min=5", "training.k_max=3"])


def test_load_config_rejects_unparseable_as_of():
    with pytest.raises(ConfigError, match=r"'features.as_of' must be a date"):
        load_config(CONF / "local.yaml", overrides=["features.as_of=31/12/2025"])


def test_load_config_rejects_negative_window():
    with pytest.raises(ConfigError, match=r"features.windows_days must all be >= 1"):
        load_config(CONF / "local.yaml", overrides=["features.windows_days=[30, -5]"])


def test_load_config_rejects_unknown_algorithm():
    with pytest.raises(ConfigError, match=r"'training.algorithm' must be one of"):
        load_config(CONF / "local.yaml", overrides=["training.algorithm=dbscan"])


def test_load_config_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=f"configuration file not found: {tmp_path}/nope.yaml$"):
        load_config(tmp_path / "nope.yaml")
    # An overlay outside conf/ has no base.yaml beside it: the message says where it goes.
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("training:\n  k: 4\n")
    with pytest.raises(ConfigError, match=rf"{tmp_path}/base.yaml\. An overlay .* put the overlay "
                                          r"in conf/, beside conf/base.yaml"):  # fmt: skip
        load_config(overlay)
    # An overlay named base.yaml is the whole configuration: the error says why it is short.
    named_base = tmp_path / "base.yaml"
    named_base.write_text("training:\n  k: 4\n")
    with pytest.raises(ConfigError, match=r"base.yaml was read as the whole configuration: a file "
                                          r"named base.yaml is never merged"):  # fmt: skip
        load_config(named_base)


def test_literal_credentials_in_config_are_rejected_naming_the_key(tmp_path):
    overlay = write(tmp_path, "spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: hunter2\n")
    with pytest.raises(ConfigError, match=r"'spark.conf.spark.hadoop.fs.s3a.secret.key' holds a "
                       r"credential: put it in an environment variable"):  # fmt: skip
        load_config(overlay)


def test_password_in_tracking_uri_is_rejected():
    with pytest.raises(ConfigError, match="embeds a password"):
        load_config(
            CONF / "local.yaml",
            overrides=["tracking.tracking_uri=http://bob:hunter2@127.0.0.1:5001"],
        )


def test_credentials_come_from_environment_and_are_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_TEST_SECRET", "hunter2")
    overlay = write(
        tmp_path, "spark:\n  conf:\n    spark.hadoop.fs.s3a.secret.key: ${SEG_TEST_SECRET}\n"
    )
    cfg = load_config(overlay)
    assert cfg.spark.conf["spark.hadoop.fs.s3a.secret.key"] == "hunter2"
    assert "hunter2" not in str(to_dict(cfg))
    assert mask_uri("https://u:p@host/x") == "https://u:***@host/x"


def test_missing_environment_variable_is_named(tmp_path):
    overlay = write(
        tmp_path, "spark:\n  conf:\n    spark.hadoop.fs.s3a.access.key: ${SEG_NOT_SET_X}\n"
    )
    with pytest.raises(ConfigError, match="environment variable SEG_NOT_SET_X, which is not set"):
        load_config(overlay)


def test_literal_access_key_with_dots_is_rejected(tmp_path):
    overlay = write(tmp_path, "spark:\n  conf:\n    spark.hadoop.fs.s3a.access.key: AKIA123\n")
    with pytest.raises(ConfigError, match="holds a credential"):
        load_config(overlay)


def test_load_config_names_the_full_path_of_a_nested_wrong_type(tmp_path):
    overlay = write(tmp_path, "rfm:\n  segments:\n    - {name: All, r: [1, many]}\n")
    with pytest.raises(ConfigError, match=r"'rfm.segments\[0\].r\[1\]' must be an integer"):
        load_config(overlay)
    overlay = write(tmp_path, "input:\n  events:\n    columns:\n      amount: [price, total]\n")
    with pytest.raises(ConfigError, match=r"'input.events.columns.amount' must be a string"):
        load_config(overlay)


def test_load_config_names_the_full_path_of_a_nested_impossible_setting(tmp_path):
    overlay = write(tmp_path, "rfm:\n  segments:\n    - {name: All, r: [1]}\n")
    with pytest.raises(ConfigError, match=r"rfm.segments\[0\].r \(All\) must be \[low, high\]"):
        load_config(overlay)


def test_load_config_names_an_unknown_key_inside_a_list(tmp_path):
    overlay = write(tmp_path, "b2b:\n  tiers:\n    - {name: Small, min_spennd: 5}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'b2b.tiers\[0\].min_spennd'"):
        load_config(overlay)


def test_load_config_rejects_floats_for_integers_and_non_booleans_for_flags():
    with pytest.raises(ConfigError, match=r"'training.k_max' must be an integer, got 5.0"):
        load_config(CONF / "local.yaml", overrides=["training.k_max=5.0"])
    with pytest.raises(ConfigError, match=r"'training.k_max' must be an integer, got an empty"):
        load_config(CONF / "local.yaml", overrides=["training.k_max="])
    with pytest.raises(ConfigError, match=r"'spark.ui_enabled' must be true or false"):
        load_config(CONF / "local.yaml", overrides=["spark.ui_enabled=1"])


def test_load_config_maps_the_yaml_key_return_to_return_(tmp_path):
    overlay = write(tmp_path, "input:\n  events:\n    event_types:\n      return: [refund, rma]\n")
    cfg = load_config(overlay)
    assert cfg.input.events.event_types.return_ == ("refund", "rma")
    assert to_dict(cfg)["input"]["events"]["event_types"]["return"] == ["refund", "rma"]
    overlay = write(tmp_path, "input:\n  events:\n    event_types:\n      return: refund\n")
    with pytest.raises(ConfigError, match=r"'input.events.event_types.return' must be a list"):
        load_config(overlay)


def test_load_config_result_is_immutable():
    cfg = load_config(CONF / "local.yaml")
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training.k_max = 3
    with pytest.raises(ValidationError, match="frozen"):
        cfg.training = cfg.training
    with pytest.raises(TypeError, match="read-only"):
        cfg.spark.conf["spark.driver.host"] = "0.0.0.0"
    assert isinstance(cfg.training.features, tuple)
    assert isinstance(cfg.rfm.segments, tuple)


def test_to_dict_round_trips_through_load_config(tmp_path):
    for name in ("local.yaml", "cluster.yaml"):
        cfg = load_config(CONF / name)
        dumped = tmp_path / "base.yaml"
        dumped.write_text(yaml.safe_dump(to_dict(cfg)))
        assert load_config(dumped) == cfg


def test_validate_rechecks_a_copied_config():
    cfg = load_config(CONF / "local.yaml")
    broken = cfg.model_copy(update={"training": cfg.training.model_copy(update={"k_min": 1})})
    validate(cfg)
    with pytest.raises(ConfigError, match=r"training.k_min must be >= 2"):
        validate(broken)


def test_time_zone_must_be_an_iana_name():
    cfg = load_config(CONF / "local.yaml", overrides=["input.events.time_zone=America/New_York"])
    assert cfg.input.events.time_zone == "America/New_York"
    with pytest.raises(ConfigError, match=r"input.events.time_zone must be an IANA time zone"):
        load_config(CONF / "local.yaml", overrides=["input.events.time_zone=Mars/Olympus"])


def test_number_format_keys_are_checked():
    with pytest.raises(ConfigError, match=r"'input.events.decimal_separator' must be one of"):
        load_config(CONF / "local.yaml", overrides=["input.events.decimal_separator=;"])
    with pytest.raises(ConfigError, match=r"thousands_separator must differ from"):
        load_config(
            CONF / "local.yaml",
            overrides=[
                'input.events.decimal_separator=","',
                'input.events.thousands_separator=","',
            ],
        )
    with pytest.raises(ConfigError, match=r"currency_symbols: '1' is not a currency symbol"):
        load_config(CONF / "local.yaml", overrides=['input.events.currency_symbols=["1"]'])


def test_configured_levels_are_normalised_like_the_data():
    cfg = load_config(CONF / "local.yaml", overrides=["features.channels=[Web, ' APP ']"])
    assert cfg.features.channels == ("web", "app")
    with pytest.raises(ConfigError, match=r"features.channels \['Web', 'web'\] repeats \['web'\]"):
        load_config(CONF / "local.yaml", overrides=["features.channels=[Web, web]"])


def test_duplicate_rule_and_match_share_are_checked():
    assert load_config(CONF / "base.yaml").quality.duplicates == "auto"
    with pytest.raises(ConfigError, match=r"'quality.duplicates' must be one of \['auto'"):
        load_config(CONF / "local.yaml", overrides=["quality.duplicates=sometimes"])
    with pytest.raises(ConfigError, match=r"input.customers.min_match_share must be in \[0, 1\]"):
        load_config(CONF / "local.yaml", overrides=["input.customers.min_match_share=1.5"])


def test_rfm_no_purchase_segment_must_not_be_a_map_name():
    assert load_config(CONF / "base.yaml").rfm.monetary_feature == "monetary_net"
    with pytest.raises(ConfigError, match=r"rfm.no_purchase_segment \('Lost'\) must differ"):
        load_config(CONF / "local.yaml", overrides=["rfm.no_purchase_segment=Lost"])


def test_load_config_remembers_the_overlay_and_overrides():
    cfg = load_config(CONF / "local.yaml", overrides=["training.k_max=7"])
    assert cfg.origin is not None
    assert (cfg.origin.config, cfg.origin.overrides) == (str(CONF / "local.yaml"),
                                                         ("training.k_max=7",))  # fmt: skip
    assert cfg.model_copy(update={}).origin == cfg.origin


def test_an_impossible_date_names_the_key_or_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'features.as_of': '2025-02-30' is not"):
        load_config(CONF / "local.yaml", overrides=["features.as_of=2025-02-30"])
    with pytest.raises(ConfigError, match=r"config key 'training.k_max': '\[1,' is not"):
        load_config(CONF / "local.yaml", overrides=["training.k_max=[1,"])
    overlay = write(tmp_path, "features:\n  as_of: 2025-02-30\n")
    with pytest.raises(ConfigError, match=rf"{overlay} holds an impossible value: day is out"):
        load_config(overlay)
