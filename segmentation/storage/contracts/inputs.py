"""Contracts of the inputs as the jobs read them, the generated sample and the features
snapshot (with its quarantine)."""

from __future__ import annotations

from pyspark.sql import types as T

from segmentation.storage.contracts.base import (
    AS_OF,
    COMMON,
    CUSTOMER_ID,
    REASON,
    RUN_ID,
    Table,
    column,
    description_of,
    schema,
)  # fmt: skip

# Contracts read as tables: one column per line where it fits (formatting kept as written).
# fmt: off
_S, _D, _DATE, _TS = T.StringType(), T.DoubleType(), T.DateType(), T.TimestampType()
_c = column

# --- inputs as the jobs read them -----------------------------------------------------------

# The canonical events every reader maps the user's columns to (``inputs.sources``).
CANONICAL_EVENTS = schema(
    _c(CUSTOMER_ID, _S),
    _c("event_time", _TS, text="When the event happened, a UTC instant (a wall-clock input "
                               "time is read in input.events.time_zone)."),
    _c("amount", _D, text="The event's amount in the input's currency (orders: what was "
                          "paid; returns: what was refunded)."),
    _c("event_type", _S, text="order, return or visit after input.events.event_types maps "
                              "your labels."),
    _c("category", _S, text="The product category, as the input writes it (trimmed)."),
    _c("channel", _S, text="The channel (web, app, store...), as the input writes it."),
    _c("device", _S, text="The device (desktop, mobile...), as the input writes it."),
    _c("quantity", _D, text="Items in the event."),
    _c("discount", _D, text="The discount on the event, in the input's currency."),
    _c("event_id", _S, text="The event's id in the input (duplicates are counted once)."),
)

_GENERATOR = ("generate_events", "run_pipeline")
_SAMPLE = "The generated sample (make run), never written for your own data:"
EVENTS = Table(
    "events", f"{_SAMPLE} one row per customer event.", _GENERATOR,
    described=tuple((f.name, description_of(f)) for f in CANONICAL_EVENTS),
)  # fmt: skip
CUSTOMERS = Table(
    "customers", f"{_SAMPLE} one row per customer, the customer attributes dimension.",
    _GENERATOR,
    described=(
        ("signup_date", "The day the customer signed up."),
        ("country", "The customer's country (ISO 3166 alpha-2)."),
        ("age", "The customer's age in years (null for business customers)."),
        ("gender", "female, male or other (null for business customers)."),
        ("os", "The operating system the customer uses most."),
        ("is_business", "True for a business (B2B) customer."),
        ("employee_count", "Employees of a business customer (null for consumers)."),
        ("industry", "Industry of a business customer (null for consumers)."),
    ),
)  # fmt: skip
TRUTH = Table(
    "segment_truth", f"{_SAMPLE} the behavioural archetype planted in each customer, to "
    "check that clustering recovers it.", _GENERATOR,
    described=(("true_segment", "The planted archetype's name."),),
)  # fmt: skip
SURVEY = Table(
    "survey_responses", f"{_SAMPLE} one row per surveyed customer, Likert answers (1-5, "
    "null: no answer) and attributes.", _GENERATOR,
    described=(
        ("price_*", "Likert answer 1-5 to a price-sensitivity statement (null: no answer)."),
        ("brand_*", "Likert answer 1-5 to a brand/quality statement (null: no answer)."),
        ("digital_*", "Likert answer 1-5 to a digital-convenience statement (null: no "
                      "answer)."),
        ("household_size", "People in the respondent's household."),
        ("region", "The respondent's region."),
        ("is_business", "True for a business (B2B) respondent."),
        ("employee_count", "Employees of a business respondent (null for consumers)."),
        ("industry", "Industry of a business respondent (null for consumers)."),
    ),
)  # fmt: skip
ATTITUDE_TRUTH = Table(
    "attitude_truth", f"{_SAMPLE} the attitudinal segment planted in each respondent.",
    _GENERATOR, described=(("true_segment", "The planted attitudinal segment's name."),),
)  # fmt: skip

# --- features -------------------------------------------------------------------------------

_IN_WINDOW = "in the last * days up to as_of (the number in the name)"
FEATURES = Table(
    "customer_features",
    "One row per customer and as_of: the behavioural features of every customer with a "
    "usable event up to as_of (definitions: the docs' Features page).",
    ("build_features", "run_pipeline", "assign_segments"),
    (AS_OF,),
    described=(
        (CUSTOMER_ID, COMMON[CUSTOMER_ID]), (AS_OF, COMMON[AS_OF]),
        ("recency_days", "Days since the last order (without orders: since the first event)."),
        ("tenure_days", "Days since the first event of any type."),
        ("frequency", "Orders up to as_of."),
        ("orders_*d", f"Orders {_IN_WINDOW}."),
        ("monetary_total", "Order amount up to as_of (gross spend, input currency)."),
        ("monetary_net_*d", f"Order minus returned amount {_IN_WINDOW}, input currency."),
        ("monetary_net", "Order amount minus returned amount up to as_of, input currency."),
        ("monetary_*d", f"Order amount {_IN_WINDOW}, input currency."),
        ("has_purchase", "1 with at least one order up to as_of, else 0."),
        ("avg_order_value", "monetary_total / frequency, input currency (0 without orders)."),
        ("active_days", "Calendar days with any event."),
        ("ipi_mean_days", "Mean days between consecutive order days (censored with fewer "
                          "than two: days since the first order)."),
        ("ipi_std_days", "Standard deviation of the days between order days (0 with fewer "
                         "than two)."),
        ("ipi_max_days", "Longest gap in days between order days (censored like the mean)."),
        ("spend_trend", "(recent - earlier) / (recent + earlier) order amount over two "
                        "features.trend_window windows; in [-1, 1]."),
        ("return_rate", "Returned amount / order amount (0 without order amount)."),
        ("discount_share", "Share of orders with a discount above 0."),
        ("category_share_*", "Share of order amount in category '{level}' (0-1)."),
        ("channel_share_*", "Share of events on channel '{level}' (0-1)."),
        ("device_share_*", "Share of events on device '{level}' (0-1)."),
    ),
    evolves=True,
    current_view="customer_features_current",
)
REJECTED_SCHEMA = schema(
    *CANONICAL_EVENTS.fields,
    _c(REASON, _S, text="Why the event was quarantined (invalid_event_time, "
                        "missing_customer_id, unknown_event_type, ...: the docs' Features "
                        "page lists them)."),
    _c(AS_OF, _DATE, text="The features snapshot whose run quarantined the row."),
    _c(RUN_ID, _S),
    _c("raw_values", T.MapType(_S, _S), text="The input row's raw text, column by column, "
                                             "for rows that could not be read."),
)
# raw_values arrived after the first release: older tables gain the column on their next write.
REJECTED = Table(
    "rejected_events",
    "One row per input event left out of a features snapshot, with the reason: nothing is "
    "dropped silently.",
    ("build_features", "run_pipeline", "assign_segments"), (AS_OF,), REJECTED_SCHEMA,
    evolves=True,
)  # fmt: skip
# fmt: on
