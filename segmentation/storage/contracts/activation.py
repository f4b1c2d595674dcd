"""Contracts of the activation tables (``workflows/audiences``, ``workflows/campaigns``): the
audiences' current members with their change data feed, the audiences' SCD2 history, campaign
results, and the sample's consent and suppression inputs."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import (
    AS_OF,
    CHANGE_DATA_FEED,
    CUSTOMER_ID,
    MODEL_NAME,
    MODEL_VERSION,
    RUN_ID,
    SEGMENT_ID,
    SEGMENT_NAME,
    Table,
    column,
    schema,
)  # fmt: skip

# Contracts read as tables: one column per line where it fits (formatting kept as written).
# fmt: off
_S, _I, _L, _D = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType()
_DATE, _TS, _B = T.DateType(), T.TimestampType(), T.BooleanType()
_c = column
_AUDIENCES = ("build_audiences", "run_pipeline")

AUDIENCE = "audience"
GROUP = "group"
TREATMENT, HOLDOUT, GLOBAL_HOLDOUT = "treatment", "holdout", "global_holdout"
_AUDIENCE = _c(AUDIENCE, _S, False, "The audience's name (audiences.definitions[].name).")
_GROUP = _c(GROUP, _S, False, "treatment (to be contacted), holdout (the audience's control "
                              "group) or global_holdout (the control group of every audience, "
                              "audiences.global_holdout_share): a salted hash of the audience "
                              "and customer_id, stable while the customer stays.")
_CHANNEL = _c("channel", _S, False, "The channel the audience is for (email, sms, ads...).")

AUDIENCE_MEMBERS_SCHEMA = schema(
    _AUDIENCE, _c(CUSTOMER_ID, _S, False), _c(SEGMENT_ID, _I), _c(SEGMENT_NAME, _S), _GROUP,
    _CHANNEL,
    _c("since", _DATE, False, "The first scoring (as_of) of the customer's current stay in "
                              "the audience."),
    _c(AS_OF, _DATE, False, "The scoring (features.as_of) that last inserted or changed this "
                            "row; an unchanged member keeps it (no change, no change feed row)."),
    _c(MODEL_NAME, _S), _c(MODEL_VERSION, _I), _c(RUN_ID, _S),
)  # fmt: skip
AUDIENCE_MEMBERS = Table(
    "audience_members",
    "The current state of every audience: one row per audience and consented, unsuppressed "
    "customer, with the group. Kept by one MERGE per audience, with Delta change data feed: "
    "a joiner is an insert, a leaver a delete, a moved customer an update, an unchanged one "
    "nothing (readChangeFeed / table_changes).",
    _AUDIENCES, (AUDIENCE,), AUDIENCE_MEMBERS_SCHEMA, properties=CHANGE_DATA_FEED,
    current_view=None,
)  # fmt: skip
AUDIENCE_HISTORY_SCHEMA = schema(
    _AUDIENCE, _c(CUSTOMER_ID, _S, False), _c(SEGMENT_ID, _I), _c(SEGMENT_NAME, _S), _GROUP,
    _CHANNEL,
    _c("valid_from", _DATE, False, "The first scoring (as_of) of this stay with this segment, "
                                   "group and channel."),
    _c("valid_to", _DATE, text="The scoring that ended the stay (the customer left, moved or "
                               "changed group), exclusive; null while current."),
    _c("is_current", _B, False, "True for the open stay (valid_to is null)."),
    _c(MODEL_NAME, _S), _c(MODEL_VERSION, _I),
)  # fmt: skip
AUDIENCE_HISTORY = Table(
    "audience_history",
    "SCD2 history of audience_members: one row per audience, customer and stay; the rows "
    "valid at a campaign's launch say who was treated and who held out.",
    _AUDIENCES, (), AUDIENCE_HISTORY_SCHEMA,
)  # fmt: skip
_LIFT = "treatment minus holdout"
CAMPAIGN_RESULTS_SCHEMA = schema(
    _AUDIENCE,
    _c("launch_date", _DATE, False, "The campaign's launch: outcomes count from the next day "
                                    "(input.events.time_zone)."),
    _c("days", _I, False, "Days after the launch measured."),
    _c(SEGMENT_ID, _I, text="The segment at launch; null: the whole audience."),
    _c(SEGMENT_NAME, _S, text="The segment's name at launch (all: the whole audience)."),
    _c("metric", _S, False, "conversion (share with an order in the window) or "
                            "revenue_per_customer (net of returns, input currency)."),
    _c("n_treatment", _L, False, "Treated customers at launch."),
    _c("n_holdout", _L, False, "Held-out customers at launch (audience and global holdout)."),
    _c("treatment_value", _D, text="The metric among the treated."),
    _c("holdout_value", _D, text="The metric among the held out."),
    _c("absolute_lift", _D, text=f"The metric, {_LIFT}."),
    _c("absolute_lift_lower", _D, text="Its lower 95% limit (conversion: Newcombe's hybrid "
                                       "score; revenue: Welch)."),
    _c("absolute_lift_upper", _D, text="Its upper 95% limit."),
    _c("relative_lift", _D, text="treatment / holdout - 1."),
    _c("relative_lift_lower", _D, text="Its lower 95% limit (conversion: Katz log ratio; "
                                       "revenue: delta method on the log ratio)."),
    _c("relative_lift_upper", _D, text="Its upper 95% limit."),
    _c("incremental", _D, text="absolute_lift x n_treatment: conversions or revenue the "
                               "campaign added among the treated."),
    _c("incremental_lower", _D, text="Its lower 95% limit."),
    _c("incremental_upper", _D, text="Its upper 95% limit."),
    _c("srm_p_value", _D, text="Sample-ratio-mismatch chi-square p-value of the treated / held "
                               "out split against the configured shares."),
    _c("minimum_detectable_lift", _D, text="Conversion: the smallest absolute lift the "
                                           "groups detect at the configured power."),
    _c("note", _S, text="sample_ratio_mismatch, underpowered or no_holdout; null: none."),
    _c(RUN_ID, _S),
    _c("measured_at", _TS, False, "When the campaign was measured, a UTC instant."),
)  # fmt: skip
CAMPAIGN_RESULTS = Table(
    "campaign_results",
    "One row per audience, launch, segment and metric: treatment against holdout after a "
    "campaign, with confidence intervals.",
    ("measure_campaign",), (AUDIENCE, "launch_date"), CAMPAIGN_RESULTS_SCHEMA,
)  # fmt: skip
_SAMPLE = "The generated sample (make run), never written for your own data:"
_GENERATOR = ("generate_events", "run_pipeline")
CONSENT = Table(
    "consent", f"{_SAMPLE} one row per customer, channel and consent change.", _GENERATOR,
    described=(
        (CUSTOMER_ID, "The customer's id."),
        ("channel", "email, sms or ads."),
        ("status", "opt_in or opt_out."),
        ("updated_at", "When the customer gave or withdrew consent, a UTC instant."),
    ),
)  # fmt: skip
SUPPRESSION = Table(
    "suppression", f"{_SAMPLE} one row per customer never to contact.", _GENERATOR,
    described=(
        (CUSTOMER_ID, "The customer's id."),
        ("reason", "complaint, legal_hold or staff."),
    ),
)  # fmt: skip
# fmt: on
