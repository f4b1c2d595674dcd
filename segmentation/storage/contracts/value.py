"""Contracts of the customer value tables (BG/NBD and Gamma-Gamma, ``workflows/value``)."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import (
    AS_OF,
    CUSTOMER_ID,
    LINEAGE,
    MODEL_NAME,
    MODEL_VERSION,
    RUN_ID,
    Table,
    column,
    schema,
)  # fmt: skip

# Contracts read as tables: one column per line where it fits (formatting kept as written).
# fmt: off
_S, _I, _L, _D, _DATE = T.StringType(), T.IntegerType(), T.LongType(), T.DoubleType(), T.DateType()
_c = column
_UNIT = "in time_unit units"

CUSTOMER_VALUE_SCHEMA = schema(
    _c(CUSTOMER_ID, _S, False),
    _c(AS_OF, _DATE, text="The date the customer is valued as of (purchases up to it count)."),
    _c(MODEL_NAME, _S), _c(MODEL_VERSION, _I), _c(RUN_ID, _S),
    _c("x", _L, False, "Repeat purchases: purchase days after the first (BTYD frequency)."),
    _c("t_x", _D, False, f"Time of the last purchase since the first, {_UNIT} (BTYD recency)."),
    _c("T", _D, False, f"Time from the first purchase to as_of, {_UNIT} (BTYD age)."),
    _c("repeat_value", _D, text="Mean net value of the repeat purchases, input currency (null "
                                "without repeats)."),
    _c("p_alive", _D, False, "P(alive): the probability the customer is still active (0-1)."),
    _c("expected_purchases", _D, False, "Expected purchases over the next horizon_periods."),
    _c("expected_order_value", _D, False, "Expected value of a purchase (Gamma-Gamma), input "
                                          "currency."),
    _c("clv", _D, False, "Customer lifetime value over horizon_periods, discounted monthly at "
                         "value.discount_rate, input currency."),
    _c("time_unit", _S, False, "The unit of t_x, T and horizon_periods (value.time_unit)."),
    _c("horizon_periods", _D, False, "The forecast horizon (value.horizon_periods)."),
    _c("flag", _S, text="non_positive_repeat_spend (valued at 0) or "
                        "expectation_did_not_converge (expectations null); null: none."),
)  # fmt: skip
CUSTOMER_VALUE = Table(
    "customer_value",
    "One row per customer with a purchase up to as_of and value model: P(alive), expected "
    "purchases and CLV (BG/NBD and Gamma-Gamma).",
    ("customer_value", "run_pipeline"), (MODEL_NAME, AS_OF), CUSTOMER_VALUE_SCHEMA,
    current_view="customer_value_current",
)  # fmt: skip
VALUE_PARAMETER_ROWS = schema(
    _c("model", _S, False, "bg_nbd, mbg_nbd or gamma_gamma."),
    _c("parameter", _S, False, "The parameter (r, alpha, a, b; p, q, gamma) or "
                               "log_likelihood."),
    _c("estimate", _D, text="Its maximum-likelihood estimate."),
    _c("std_error", _D, text="Its standard error from the Hessian (null: not available)."),
)  # fmt: skip
VALUE_PARAMETERS_SCHEMA = T.StructType([*LINEAGE, *VALUE_PARAMETER_ROWS])
VALUE_PARAMETERS = Table(
    "value_model_parameters",
    "One row per parameter and value model version: the fitted BTYD parameters.",
    ("customer_value", "run_pipeline"), (MODEL_NAME, MODEL_VERSION), VALUE_PARAMETERS_SCHEMA,
)  # fmt: skip
# fmt: on
