"""Contracts of the segmentations' tables: membership and its history and migration, and each
model version's profiles, composition, validation, RFM scores and attitudinal basis."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import (
    AS_OF,
    CUSTOMER_ID,
    DISTANCE,
    LINEAGE,
    MODEL_NAME,
    MODEL_VERSION,
    REASON,
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

_SEGMENTING = ("train_segments", "train_attitudes", "assign_segments", "rule_segments",
               "run_pipeline")  # fmt: skip
_TRAINING = ("train_segments", "train_attitudes", "run_pipeline")

MEMBERSHIP_SCHEMA = schema(
    _c(CUSTOMER_ID, _S),
    _c(AS_OF, _DATE, text="The snapshot date the customer was scored as of."),
    _c(SEGMENT_ID, _I), _c(SEGMENT_NAME, _S),
    _c(DISTANCE, _D, text="Euclidean distance to the segment's centre in the model's scaled "
                          "feature space (null for rule-based segmentations)."),
    _c(MODEL_NAME, _S), _c(MODEL_VERSION, _I), _c(RUN_ID, _S),
    _c("scored_at", _TS, text="When the row was scored, a UTC instant."),
)  # fmt: skip
MEMBERSHIP = Table(
    "segment_membership",
    "One row per customer, segmentation (model_name) and as_of: the customer's segment in "
    "that snapshot. The current segment is the latest as_of of the model "
    "(segment_membership_current).",
    _SEGMENTING, (MODEL_NAME, AS_OF), MEMBERSHIP_SCHEMA,
    current_view="segment_membership_current",
)  # fmt: skip
HISTORY_SCHEMA = schema(
    _c(CUSTOMER_ID, _S, False), _c(MODEL_NAME, _S, False), _c(SEGMENT_ID, _I, False),
    _c(SEGMENT_NAME, _S),
    _c("valid_from", _DATE, False, "The first snapshot date of this stay in the segment."),
    _c("valid_to", _DATE, text="The snapshot date the stay ended (the customer moved or "
                               "left); null while current."),
    _c("is_current", _B, False, "True for the customer's open stay (valid_to is null)."),
    _c(MODEL_VERSION, _I, False),
)  # fmt: skip
HISTORY = Table(
    "segment_membership_history",
    "SCD2 history of segment_membership: one row per customer, segmentation and stay in a "
    "segment; a customer who moved or left has the row closed, never deleted.",
    _SEGMENTING, (), HISTORY_SCHEMA,
)  # fmt: skip
MIGRATION_SCHEMA = schema(
    _c(AS_OF, _DATE, text="The snapshot the customers moved into."),
    _c("previous_as_of", _DATE, text="The snapshot they moved from (the model's previous "
                                     "as_of)."),
    _c(MODEL_NAME, _S),
    _c("from_segment_id", _I, text="Segment at previous_as_of (null: a new customer)."),
    _c("from_segment_name", _S, text="Its name at previous_as_of."),
    _c("to_segment_id", _I, text="Segment at as_of (null: the customer left)."),
    _c("to_segment_name", _S, text="Its name at as_of."),
    _c("customers", _L, text="Customers who made this move."),
    _c("share_of_from", _D, text="customers / the from segment's size at previous_as_of (0-1)."),
)  # fmt: skip
MIGRATION = Table(
    "segment_migration",
    "One row per (from, to) segment pair between a model's consecutive snapshots: how many "
    "customers moved.",
    _SEGMENTING, (MODEL_NAME, AS_OF), MIGRATION_SCHEMA,
)  # fmt: skip
_UNITS = "in the feature's original units"
# segment_profiles rows without their lineage (what ``profiling`` produces).
PROFILE_ROWS = schema(
    _c(SEGMENT_ID, _I, False), _c(SEGMENT_NAME, _S, False),
    _c("size", _L, False, "Customers in the segment at the training snapshot."),
    _c("share", _D, False, "size / all customers scored (0-1)."),
    _c("feature", _S, False, "The feature (a customer_features column) this row profiles."),
    _c("mean", _D, text=f"The segment's mean, {_UNITS}."),
    _c("stddev", _D, text=f"The segment's standard deviation, {_UNITS}."),
    _c("min", _D, text=f"The segment's minimum, {_UNITS}."),
    _c("p25", _D, text=f"The segment's 25th percentile, {_UNITS}."),
    _c("median", _D, text=f"The segment's median, {_UNITS}."),
    _c("p75", _D, text=f"The segment's 75th percentile, {_UNITS}."),
    _c("max", _D, text=f"The segment's maximum, {_UNITS}."),
    _c("population_mean", _D, text=f"Everyone's mean, {_UNITS}."),
    _c("std_diff", _D, text="(mean - population_mean) / the population's standard deviation: "
                            "how distinctive the segment is on the feature."),
)  # fmt: skip
PROFILES_SCHEMA = T.StructType([*LINEAGE, *PROFILE_ROWS])
PROFILES = Table(
    "segment_profiles",
    "One row per segment, feature and model version: the segment's statistics beside "
    "everyone's. Segment ids and names of a model version are defined here.",
    (*_TRAINING, "rule_segments"), (MODEL_NAME, MODEL_VERSION), PROFILES_SCHEMA,
)  # fmt: skip
# segment_composition rows without their lineage and segment name (what ``explain`` produces).
COMPOSITION_ROWS = schema(
    _c(SEGMENT_ID, _I, False),
    _c("attribute", _S, False, "The customer attribute (explain.attributes)."),
    _c("value", _S, False, "The attribute's value (numbers in their configured bins)."),
    _c("customers", _L, False, "Customers of the segment with this value."),
    _c("share_of_segment", _D, False, "customers / the segment's size (0-1)."),
    _c("population_share", _D, False, "The value's share among all customers (0-1)."),
    _c("sensitive", _B, False, "True for a sensitive attribute (explain.sensitive): described, "
                               "never used to define or name a segment."),
)  # fmt: skip
COMPOSITION_SCHEMA = T.StructType(
    [*LINEAGE, COMPOSITION_ROWS[SEGMENT_ID], _c(SEGMENT_NAME, _S, False),
     *COMPOSITION_ROWS.fields[1:]]
)  # fmt: skip
COMPOSITION = Table(
    "segment_composition",
    "One row per segment, attribute value and model version: who is in each segment "
    "(attributes that did not define it).",
    _TRAINING, (MODEL_NAME, MODEL_VERSION), COMPOSITION_SCHEMA,
)  # fmt: skip
_SCORE = "score 1-5 against the buyers' quintiles (null without a purchase) of"
RFM_SCORES_SCHEMA = schema(
    _c(AS_OF, _DATE), _c(MODEL_NAME, _S), _c(MODEL_VERSION, _I), _c(CUSTOMER_ID, _S),
    _c("r_score", _I, text=f"Recency {_SCORE} recency_days (fewer days score higher)."),
    _c("f_score", _I, text=f"Frequency {_SCORE} frequency."),
    _c("m_score", _I, text=f"Monetary {_SCORE} monetary_net."),
    _c("rfm_cell", _S, text="The three scores as text, e.g. 545 (null without a purchase)."),
    _c(SEGMENT_ID, _I), _c(SEGMENT_NAME, _S), _c(RUN_ID, _S),
)  # fmt: skip
RFM_SCORES = Table(
    "rfm_scores",
    "One row per customer and as_of: the RFM scores behind the rfm segmentation.",
    ("rule_segments", "run_pipeline"), (AS_OF,), RFM_SCORES_SCHEMA,
)  # fmt: skip
# segment_validation rows without their lineage (``validation.Measure``); segment_id null is
# a measure of the whole segmentation.
VALIDATION_ROWS = schema(
    _c(SEGMENT_ID, _I, text="The segment measured; null: the whole segmentation."),
    _c("measure", _S, False, "The measure (bootstrap_jaccard, split_half_ari, "
                             "silhouette_euclidean, outcome_*: the docs' Validation section)."),
    _c("value", _D, text="The measure's value."),
    _c("ci_lower", _D, text="Lower end of its 95% confidence interval (null: none)."),
    _c("ci_upper", _D, text="Upper end of its 95% confidence interval (null: none)."),
    _c("verdict", _S, text="The measure's reading by its published thresholds (e.g. "
                           "Hennig's for Jaccard: dissolved ... highly stable); null: none."),
)  # fmt: skip
VALIDATION_SCHEMA = T.StructType([*LINEAGE, *VALIDATION_ROWS])
VALIDATION = Table(
    "segment_validation",
    "One row per measure, segment and model version: how stable and how different in "
    "outcomes the segments are.",
    ("train_segments", "run_pipeline"), (MODEL_NAME, MODEL_VERSION), VALIDATION_SCHEMA,
)  # fmt: skip
# The attitudinal basis (``workflows/attitudes``): one row per item and factor.
FACTOR_LOADING_ROWS = schema(
    _c("item", _S, False, "The survey item (a survey column)."),
    _c("factor", _I, False, "The factor's number (1-based)."),
    _c("factor_name", _S, False, "The factor's name, from its highest-loading items."),
    _c("loading", _D, False, "The rotated pattern loading."),
    _c("structure", _D, False, "The item-factor correlation (equal to the loading for "
                               "orthogonal rotations)."),
    _c("score_weight", _D, False, "The regression weight that scores the factor from the "
                                  "standardised item."),
    _c("communality", _D, False, "The item's variance the factors explain (0-1)."),
    _c("uniqueness", _D, False, "1 - communality."),
    _c("explained_variance", _D, False, "The factor's share of the items' total variance."),
)  # fmt: skip
FACTOR_LOADINGS_SCHEMA = T.StructType([*LINEAGE, *FACTOR_LOADING_ROWS])
FACTOR_LOADINGS = Table(
    "factor_loadings",
    "One row per survey item, factor and model version: the attitudinal basis.",
    ("train_attitudes", "run_pipeline"), (MODEL_NAME, MODEL_VERSION), FACTOR_LOADINGS_SCHEMA,
)  # fmt: skip
# Respondents a training left out, with the reason (never silently dropped).
EXCLUSION_ROWS = schema(
    _c(CUSTOMER_ID, _S),
    _c(REASON, _S, False, "too_many_missing_answers, missing_customer_id or "
                                  "no_behaviour_features."),
    _c("missing_items", _I, text="Items the respondent did not answer."),
    _c("items", _I, False, "Items in the survey."),
)  # fmt: skip
EXCLUSIONS_SCHEMA = T.StructType([*LINEAGE, *EXCLUSION_ROWS])
EXCLUSIONS = Table(
    "survey_exclusions",
    "One row per survey respondent an attitudinal training left out, with the reason.",
    ("train_attitudes", "run_pipeline"), (MODEL_NAME, AS_OF), EXCLUSIONS_SCHEMA,
)  # fmt: skip
# fmt: on
