"""Treatment and holdout groups by a salted hash, and the audience's exclusion reasons.

A customer's group is a function of the salt, the audience's name and the customer's id only:
reproducible across re-runs, independent between audiences (each audience hashes its own name),
and stable for a customer who stays in the audience, whoever else joins or leaves. No quota is
drawn per segment, which would make one customer's group depend on the others'; the hash gives
every segment a holdout share within binomial error of the configured one.

The hash is SHA-256 of ``salt|audience|customer_id`` (UTF-8), its first 13 hex digits read as
an integer and divided by 16^13 (2^52, exact in a double): a number in [0, 1), the same in any
language (``unit_interval`` in Python). A customer is in the global control group when the hash
of ``salt|__global__|customer_id`` is below ``audiences.global_holdout_share``; otherwise in the
audience's holdout when the audience's hash is below its ``holdout_share``; otherwise treated.
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column
from pyspark.sql import functions as F

from segmentation.storage.tables import GLOBAL_HOLDOUT, HOLDOUT, TREATMENT

GLOBAL = "__global__"
"""The name hashed for the global control group (an audience name starts with a letter)."""
_DIGITS = 13
_SCALE = float(16**_DIGITS)


def unit_interval(salt: str, audience: str, customer_id: str) -> float:
    """The hash in Python: what :func:`unit_hash` computes in Spark, for checks and tools."""
    digest = hashlib.sha256(f"{salt}|{audience}|{customer_id}".encode()).hexdigest()
    return int(digest[:_DIGITS], 16) / _SCALE


def unit_hash(salt: str, audience: str, customer_id: Column) -> Column:
    """A number in [0, 1) from ``salt|audience|customer_id`` (see the module docstring)."""
    text = F.concat_ws("|", F.lit(salt), F.lit(audience), customer_id)
    hex_prefix = F.substring(F.sha2(text, 256), 1, _DIGITS)
    return F.conv(hex_prefix, 16, 10).cast("double") / F.lit(_SCALE)


def group(salt: str, audience: str, holdout_share: float, global_share: float) -> Column:
    """``global_holdout``, ``holdout`` or ``treatment`` for the row's ``customer_id``."""
    customer = F.col("customer_id")
    return (
        F.when(unit_hash(salt, GLOBAL, customer) < F.lit(global_share), F.lit(GLOBAL_HOLDOUT))
        .when(unit_hash(salt, audience, customer) < F.lit(holdout_share), F.lit(HOLDOUT))
        .otherwise(F.lit(TREATMENT))
    )


def expected_holdout_share(holdout_share: float, global_share: float) -> float:
    """The share of an audience in either control group: ``h + g - h g`` (independent hashes)."""
    return holdout_share + global_share - holdout_share * global_share
