"""Survey answers checked, cleaned and summarised before the factor analysis (Spark built-ins).

The mapping in ``attitudes.items`` / ``attitudes.attributes`` says what each column is. One
aggregation over all respondents counts, per column, the answers that cannot be used and, per
respondent, the missing items; bad input is then a clear error naming the column and the
config key, and too sparse respondents are a counted exclusion:

* an item or numeric attribute holding text (a categorical column mapped as numeric): error;
* an ordinal answer outside its scale or not a whole number (a numeric item that is NaN or
  infinite): error with ``attitudes.items.invalid_answers: error`` (default), else a missing
  answer, counted per item;
* an item without a single usable answer: error (nothing to correlate);
* an item's "no answer" labels (``attitudes.items.missing_answers``: ``Don't know``, ``N/A``,
  ``Prefer not to say``...; per item ``missing_answers_by_item``, e.g. a code 99) are missing
  answers, counted per item, whatever ``invalid_answers`` says;
* a boolean attribute with a value that is not true/false, yes/no, 1/0: error;
* a respondent missing more than ``attitudes.max_missing_share`` of the items, or without a
  customer id: excluded, with the reason (``survey_exclusions``).

Imputation of the remaining missing values (the documented rule): an ordinal item takes the
median answer of the retained respondents (the lower median, so it is an answer on the scale),
a numeric item or attribute their mean, a boolean attribute their share of true (so it sits
between the two groups), a categorical attribute its own level ``(missing)``.

The same cleaning expressions (``clean_sql``) are part of the registered model, so a new
respondent is cleaned exactly as the training's respondents were.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.config import AttitudesConfig
from segmentation.config.types import BLANK, strip_blank
from segmentation.errors import InputError
from segmentation.storage import tables

log = logging.getLogger(__name__)

Kind = Literal["ordinal", "numeric", "categorical", "boolean"]
MISSING_ID = "missing_customer_id"
TOO_MANY_MISSING = "too_many_missing_answers"
NO_BEHAVIOUR = "no_behaviour_features"
_TRUE = ("true", "t", "yes", "y", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "0", "0.0")
_MISSING_COUNT = "_att_missing_items"


@dataclass(frozen=True)
class Mapped:
    """One mapped survey column: its name, role, scale (ordinal) and config key."""

    name: str
    kind: Kind
    key: str
    scale: tuple[int, int] | None = None
    missing: tuple[str, ...] = ()
    """Answers that mean "no answer" (``Don't know``, ``N/A``, a code such as 99), compared
    trimmed and lower-cased: missing answers, never invalid ones."""


def columns(ac: AttitudesConfig) -> tuple[list[Mapped], list[Mapped]]:
    """The factor-analysed items and the attributes, as mapped in ``attitudes``."""
    it, at = ac.items, ac.attributes

    def missing(item: str) -> tuple[str, ...]:
        labels = (*it.missing_answers, *it.missing_answers_by_item.get(item, ()))
        return tuple(dict.fromkeys(normalise_answer(v) for v in labels))

    items = [Mapped(n, "ordinal", "attitudes.items.ordinal", it.scale_of(n), missing(n))
             for n in it.ordinal]  # fmt: skip
    items += [Mapped(n, "numeric", "attitudes.items.numeric", None, missing(n))
              for n in it.numeric]  # fmt: skip
    attributes = [Mapped(n, "numeric", "attitudes.attributes.numeric") for n in at.numeric]
    attributes += [Mapped(n, "categorical", "attitudes.attributes.categorical")
                   for n in at.categorical]  # fmt: skip
    attributes += [Mapped(n, "boolean", "attitudes.attributes.boolean") for n in at.boolean]
    return items, attributes


# --- the cleaning expressions (SQL text: also the registered model's first step) -------------


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def normalise_answer(text: str) -> str:
    """An answer label as compared: blanks trimmed, lower case, a typographic apostrophe as a
    plain one (U+2019 in ``Don\u2019t know`` becomes an apostrophe)."""
    return strip_blank(text).lower().replace("\u2019", "'")


def _text(source: str) -> str:
    """The value as trimmed text (every Unicode blank, as ``parsing.trim_blank``)."""
    pattern = sql_text(f"^{BLANK}+|{BLANK}+$")
    return f"REGEXP_REPLACE(CAST({source} AS STRING), {pattern}, '')"


def _declined(source: str, col: Mapped) -> str:
    """True where the answer is one of the item's "no answer" labels."""
    if not col.missing:
        return "FALSE"
    label = f"LOWER(REPLACE({_text(source)}, '\u2019', \"'\"))"
    return f"({label} IN ({', '.join(map(sql_text, col.missing))}))"


def _blank(source: str, col: Mapped | None = None) -> str:
    """A missing answer: null, blank, or (items) a "no answer" label."""
    declined = "" if col is None else f" OR {_declined(source, col)}"
    return f"({source} IS NULL OR {_text(source)} = ''{declined})"


def _number(source: str) -> str:
    return f"TRY_CAST({_text(source)} AS DOUBLE)"


def sql_text(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def valid_sql(col: Mapped, source: str) -> str:
    """True where the (non-blank, numeric) value is a usable answer of ``col``."""
    x = _number(source)
    if col.kind == "ordinal":
        assert col.scale is not None
        low, high = col.scale
        return f"({x} BETWEEN {low} AND {high} AND {x} = FLOOR({x}))"
    return f"NOT (ISNAN({x}) OR ABS({x}) = DOUBLE('infinity'))"


def clean_sql(col: Mapped, source: str, *, invalid: Literal["error", "missing"]) -> str:
    """The cleaned value of ``col`` read from the SQL expression ``source``.

    Numbers (items, numeric attributes) become DOUBLE, booleans 1.0/0.0, categories trimmed
    text; blanks and an item's no-answer labels become NULL. Text in a numeric attribute, an
    invalid boolean and (with ``invalid="error"``) an item's answer outside its scale or other
    text stop the query with ``raise_error`` naming the column and key; with
    ``invalid="missing"`` such an answer becomes NULL.
    """
    if col.kind == "categorical":
        return f"NULLIF({_text(source)}, '')"
    if col.kind == "boolean":
        text = f"LOWER({_text(source)})"
        bad = _raise(f"a value of boolean attribute {col.name} ({col.key}) is not true/false")
        return (
            f"CASE WHEN {_blank(source)} THEN CAST(NULL AS DOUBLE) "
            f"WHEN {text} IN ({', '.join(map(sql_text, _TRUE))}) THEN 1D "
            f"WHEN {text} IN ({', '.join(map(sql_text, _FALSE))}) THEN 0D ELSE {bad} END"
        )
    item = col.key.startswith("attitudes.items")
    text_error = _raise(
        f"item {col.name} ({col.key}) holds a text answer that is not one of its no-answer "
        "labels (attitudes.items.missing_answers)"
        if item else
        f"column {col.name} ({col.key}) holds text: map it under attitudes.attributes.categorical"
    )  # fmt: skip
    if invalid == "missing" and item:
        text_error = "CAST(NULL AS DOUBLE)"
    if invalid == "missing":
        out_of_range = "CAST(NULL AS DOUBLE)"
    else:
        what = f"outside its scale {list(col.scale)}" if col.scale else "not a finite number"
        out_of_range = _raise(
            f"an answer to {col.name} ({col.key}) is {what} (attitudes.items.invalid_answers)"
        )
    x = _number(source)
    return (
        f"CASE WHEN {_blank(source, col)} THEN CAST(NULL AS DOUBLE) WHEN {x} IS NULL THEN "
        f"{text_error} WHEN {valid_sql(col, source)} THEN {x} ELSE {out_of_range} END"
    )


def _raise(message: str) -> str:
    return f"CAST(RAISE_ERROR({sql_text(message)}) AS DOUBLE)"


# --- checking and summarising ------------------------------------------------------------


@dataclass
class Survey:
    """Retained respondents with clean columns, the excluded ones, and the training's numbers.

    Attributes:
        respondents: ``customer_id`` plus every mapped column, cleaned (``clean_sql``), of the
            retained respondents (cache it: everything downstream reads it).
        excluded: ``customer_id``, ``reason``, ``missing_items``, ``items`` per excluded one.
        items, attributes: the mapping.
        read: respondents in the input.
        exclusions: respondents excluded, by reason.
        invalid_answers: answers turned missing, by item (``invalid_answers: missing``).
        declined: "no answer" labels (``Don't know``, ``N/A``, 99...) read as missing, by item.
        answered: usable answers per item (all respondents).
        impute: the imputation value of each item and numeric/boolean attribute.
    """

    respondents: DataFrame
    excluded: DataFrame
    items: list[Mapped]
    attributes: list[Mapped]
    read: int
    exclusions: dict[str, int] = field(default_factory=dict)
    invalid_answers: dict[str, int] = field(default_factory=dict)
    declined: dict[str, int] = field(default_factory=dict)
    """Answers read as missing because they are a "no answer" label, by item."""
    answered: dict[str, int] = field(default_factory=dict)
    impute: dict[str, float] = field(default_factory=dict)

    @property
    def retained(self) -> int:
        return self.read - sum(self.exclusions.values())


def check(raw: DataFrame, ac: AttitudesConfig) -> Survey:
    """Check the survey against its mapping, exclude sparse respondents, fix the imputation.

    Args:
        raw: the survey as read (``sources.read_survey``): ``customer_id`` plus the columns.
        ac: the ``attitudes`` section.

    Raises:
        InputError: a mapped column is missing, holds text where numbers are expected, has
            invalid answers (``invalid_answers: error``) or has no usable answer at all.
    """
    items, attributes = columns(ac)
    _check_present(raw, [*items, *attributes])
    cleaned = raw.select(
        tables.CUSTOMER_ID,
        *[
            F.expr(clean_sql(c, quote(c.name), invalid="missing")).alias(c.name)
            for c in attributes
            if c.kind == "categorical"
        ],
        *_checked_columns([*items, *[c for c in attributes if c.kind != "categorical"]]),
    )
    limit = ac.max_missing_share * len(items)
    missing = sum((F.col(c.name).isNull().cast("int") for c in items), F.lit(0))
    flagged = cleaned.withColumn(_MISSING_COUNT, missing)
    has_id = F.col(tables.CUSTOMER_ID).isNotNull() & (F.col(tables.CUSTOMER_ID) != "")
    keep = has_id & (F.col(_MISSING_COUNT) <= F.lit(limit))
    stats = _counts(flagged, items, attributes, keep, has_id)
    _raise_for(raw, stats, items, attributes, ac)
    reason = F.when(~has_id, F.lit(MISSING_ID)).otherwise(F.lit(TOO_MANY_MISSING))
    survey = Survey(
        respondents=flagged.where(keep).select(
            tables.CUSTOMER_ID, *[c.name for c in [*items, *attributes]]
        ),
        excluded=flagged.where(~keep).select(
            tables.CUSTOMER_ID,
            reason.alias(tables.REASON),
            F.col(_MISSING_COUNT).alias("missing_items"),
            F.lit(len(items)).alias("items"),
        ),
        items=items,
        attributes=attributes,
        read=int(stats["n"]),
    )
    _fill_counts(survey, stats, items)
    if survey.retained < 3:
        raise InputError(
            f"only {survey.retained} of {survey.read} respondents are usable (the others miss "
            f"more than attitudes.max_missing_share = {ac.max_missing_share} of the items, or "
            "their customer id)"
        )
    survey.impute = _imputation(stats, items, attributes)
    for reason_name, count in survey.exclusions.items():
        log.info("survey: %d respondent(s) excluded: %s", count, reason_name)
    return survey


def _fill_counts(survey: Survey, stats: dict[str, float], items: Sequence[Mapped]) -> None:
    """Exclusions, usable answers, invalid answers and no-answer labels from the counts."""
    survey.exclusions = {r: int(stats[r]) for r in (MISSING_ID, TOO_MANY_MISSING) if stats[r]}
    survey.answered = {c.name: int(stats[f"ok:{c.name}"]) for c in items}
    for c in items:
        invalid = int(stats[f"bad:{c.name}"] + stats[f"text:{c.name}"])
        if invalid:
            survey.invalid_answers[c.name] = invalid
        if stats[f"declined:{c.name}"]:
            survey.declined[c.name] = int(stats[f"declined:{c.name}"])


def _check_present(raw: DataFrame, mapped: Sequence[Mapped]) -> None:
    present = {c.lower() for c in raw.columns}
    for col in mapped:
        if col.name.lower() not in present:
            raise InputError(
                f"column '{col.name}' ({col.key}) is not in the survey table; its columns: "
                f"{', '.join(sorted(raw.columns))}"
            )


def _checked_columns(cols: Sequence[Mapped]) -> list[Column]:
    """Per column: the cleaned value (invalid answers missing), and flags for text and
    invalid values (only these need the raw value)."""
    out = []
    for c in cols:
        src = quote(c.name)
        text = f"(NOT {_blank(src)} AND {_number(src)} IS NULL)"
        if c.kind == "boolean":
            value = f"LOWER({_text(src)})"
            known = ", ".join(map(sql_text, (*_TRUE, *_FALSE)))
            text = f"(NOT {_blank(src)} AND {value} NOT IN ({known}))"
            out += [F.expr(f"CASE WHEN {text} THEN NULL ELSE {clean_sql(c, src, invalid='missing')}"
                           " END").alias(c.name)]  # fmt: skip
        else:
            text = f"(NOT {_blank(src, c)} AND {_number(src)} IS NULL)"
            bad = f"(NOT {_blank(src, c)} AND NOT {text} AND NOT {valid_sql(c, src)})"
            declined = f"({_declined(src, c)})"
            out += [
                F.expr(
                    f"CASE WHEN {text} OR {bad} OR {declined} THEN NULL ELSE {_number(src)} END"
                ).alias(c.name),
                F.expr(bad).alias(f"_bad:{c.name}"),
                F.expr(declined).alias(f"_declined:{c.name}"),
            ]
        out.append(F.expr(text).alias(f"_text:{c.name}"))
    return out


def _counts(
    flagged: DataFrame,
    items: Sequence[Mapped],
    attributes: Sequence[Mapped],
    keep: Column,
    has_id: Column,
) -> dict[str, float]:
    """Every count and sum the checks and the imputation need, in one aggregation."""

    def count(cond: Column) -> Column:
        return F.sum(F.when(cond, 1).otherwise(0))

    exprs = [F.count(F.lit(1)).alias("n"), count(~has_id).alias(MISSING_ID),
             count(has_id & ~keep).alias(TOO_MANY_MISSING)]  # fmt: skip
    for c in [*items, *attributes]:
        if c.kind == "categorical":
            exprs.append(count(F.col(c.name).isNotNull()).alias(f"ok:{c.name}"))
            continue
        x = F.col(c.name)
        exprs += [count(F.col(f"`_text:{c.name}`")).alias(f"text:{c.name}"),
                  count(x.isNotNull()).alias(f"ok:{c.name}"),
                  F.sum(F.when(keep, x)).alias(f"sum:{c.name}"),
                  count(keep & x.isNotNull()).alias(f"kept:{c.name}")]  # fmt: skip
        if c.kind != "boolean":
            exprs.append(count(F.col(f"`_bad:{c.name}`")).alias(f"bad:{c.name}"))
            exprs.append(count(F.col(f"`_declined:{c.name}`")).alias(f"declined:{c.name}"))
        if c.kind == "ordinal":
            assert c.scale is not None
            exprs += [count(keep & (x == level)).alias(f"level:{c.name}:{level}")
                      for level in range(c.scale[0], c.scale[1] + 1)]  # fmt: skip
    row = flagged.agg(*exprs).first()
    assert row is not None
    return {k: (0.0 if v is None else float(v)) for k, v in row.asDict().items()}


def _raise_for(
    raw: DataFrame,
    stats: dict[str, float],
    items: Sequence[Mapped],
    attributes: Sequence[Mapped],
    ac: AttitudesConfig,
) -> None:
    """The first problem found, as an error naming the column, its key and examples."""
    for c in items:
        text = int(stats[f"text:{c.name}"])
        if text and ac.items.invalid_answers == "error":
            raise InputError(
                f"item '{c.name}' ({c.key}) has {text} text answer(s) that are not numbers nor "
                f"one of its no-answer labels, e.g. {_examples(raw, c, '_text')}: add them to "
                f"attitudes.items.missing_answers (or missing_answers_by_item.{c.name}) if they "
                "mean no answer, or set attitudes.items.invalid_answers: missing"
            )
    for c in attributes:
        if c.kind != "categorical" and stats[f"text:{c.name}"]:
            expected = "true/false values" if c.kind == "boolean" else "numbers"
            hint = (
                ""
                if c.kind == "boolean"
                else (
                    " (is it a categorical column? map it under attitudes.attributes.categorical)"
                )
            )
            raise InputError(
                f"column '{c.name}' ({c.key}) must hold {expected}, but "
                f"{int(stats[f'text:{c.name}'])} value(s) are not, e.g. "
                f"{_examples(raw, c, '_text')}{hint}"
            )  # fmt: skip
    for c in items:
        bad = int(stats[f"bad:{c.name}"])
        if bad and ac.items.invalid_answers == "error":
            what = f"outside its scale {list(c.scale)}" if c.scale else "not finite numbers"
            scale_key = (f"attitudes.items.scales.{c.name} or attitudes.items.scale"
                         if c.scale else c.key)  # fmt: skip
            raise InputError(
                f"item '{c.name}' ({c.key}) has {bad} answer(s) {what} ({scale_key}), e.g. "
                f"{_examples(raw, c, '_bad')}: fix the data, correct the scale, or set "
                "attitudes.items.invalid_answers: missing to count them as missing answers"
            )
        if not stats[f"ok:{c.name}"]:
            raise InputError(
                f"item '{c.name}' ({c.key}) has no usable answer at all: remove it from the "
                "mapping or check the column"
            )
    for c in attributes:
        if not stats[f"ok:{c.name}"]:
            raise InputError(
                f"attribute '{c.name}' ({c.key}) has no value at all: remove it from the mapping"
            )


def _examples(raw: DataFrame, col: Mapped, flag: str) -> str:
    """Up to three offending raw values (only computed for an error message)."""
    checked = raw.select(F.col(quote(col.name)).alias("v"), *_checked_columns([col]))
    rows = checked.where(F.col(f"`{flag}:{col.name}`")).select("v").distinct().limit(3).collect()
    return ", ".join(repr(r["v"]) for r in rows)


def _imputation(
    stats: dict[str, float], items: Sequence[Mapped], attributes: Sequence[Mapped]
) -> dict[str, float]:
    """Lower median answer (ordinal), else the mean of the retained respondents' values."""
    out = {}
    for c in [*items, *attributes]:
        if c.kind == "categorical":
            continue
        kept = stats[f"kept:{c.name}"]
        if c.kind == "ordinal" and kept:
            assert c.scale is not None
            levels = range(c.scale[0], c.scale[1] + 1)
            position, seen = (kept - 1) // 2, 0.0
            for level in levels:
                seen += stats[f"level:{c.name}:{level}"]
                if seen > position:
                    out[c.name] = float(level)
                    break
        else:
            out[c.name] = stats[f"sum:{c.name}"] / kept if kept else 0.0
    return out
