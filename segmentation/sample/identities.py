"""The sample's identifiers (``generator.identities``): one planted customer appears under
several identifiers, as in real channel data, with the truth of who is who.

Every customer (``customer_id`` stays the planted truth on every event, so jobs without
stitching read the sample as before) has a CRM id (``crm_id``, equal to ``customer_id``), an
email, 1-3 web cookies (``anonymous_id``), 1-2 app devices, and (half of them) a loyalty card;
60% have a phone in the CRM. On the events:

* web: the cookie on every event; orders and returns are logged in (``crm_id``) and orders
  carry the email, written as typed (``C00000042@Example.NET `` now and then), or a
  placeholder (``test@example.com``, ``unknown``, blank) on 7% of them;
* app: always logged in (``crm_id``) on one of the customer's devices; in 3% of households
  (three consecutive customers) a shared family tablet is used for some app events;
* store: the loyalty card alone, or, without a card, the CRM id (with the placeholder card
  ``0`` on 5% of those events).

``identity_edges`` holds one login per cookie (the cookie and the CRM id, at the customer's
first event: anonymous web sessions that log in later), the customers table gains ``email``,
``phone`` (national or international spelling) and ``loyalty_card``, and ``identity_truth``
lists every planted identifier in its normalised form with its customer (a shared tablet with
each of its household's customers).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.sample.generator import _uniform

SHARED_HOUSEHOLD_SHARE = 0.03
HOUSEHOLD_SIZE = 3
TABLET_EVENT_SHARE = 0.3
CARD_SHARE = 0.5
PHONE_SHARE = 0.6
EMAIL_DOMAIN = "example.net"


def _cid() -> Column:
    return F.substring(F.col("customer_id"), 2, 8).cast("long")


def _k() -> Column:
    return F.substring_index(F.col("event_id"), "-", -1).cast("int")


def _email(cid: Column) -> Column:
    return F.format_string(f"c%08d@{EMAIL_DOMAIN}", cid)


def _cookie(seed: int, cid: Column, j: Column) -> Column:
    return F.format_string("anon-%016x", F.xxhash64(F.lit(seed), F.lit("cookie"), cid, j))


def _device(seed: int, cid: Column, j: Column) -> Column:
    return F.format_string("dev-%016x", F.xxhash64(F.lit(seed), F.lit("device"), cid, j))


def _tablet(cid: Column) -> Column:
    return F.format_string("tablet-%08d", F.floor(cid / HOUSEHOLD_SIZE))


def _counts(seed: int, cid: Column) -> tuple[Column, Column]:
    """Cookies (1-3) and devices (1-2) of a customer."""
    cookies = (1 + F.floor(_uniform(seed, "cookies", cid) * 3)).cast("int")
    devices = (1 + F.floor(_uniform(seed, "devices", cid) * 2)).cast("int")
    return cookies, devices


def _has_card(seed: int, cid: Column) -> Column:
    return _uniform(seed, "card", cid) < CARD_SHARE


def _card(seed: int, cid: Column) -> Column:
    return F.format_string("LC%010d", F.pmod(F.xxhash64(F.lit(seed), F.lit("card#"), cid),
                                             F.lit(10_000_000_000)))  # fmt: skip


def _sharing(seed: int, cid: Column) -> Column:
    household = F.floor(cid / HOUSEHOLD_SIZE)
    return _uniform(seed, "household", household) < SHARED_HOUSEHOLD_SHARE


def with_identifiers(events: DataFrame, seed: int) -> DataFrame:
    """The events with ``crm_id``, ``email``, ``anonymous_id``, ``device_id``, ``loyalty_card``
    as the channels would log them (the module docstring)."""
    cid, k = _cid(), _k()
    cookies, devices = _counts(seed, cid)
    channel, kind = F.col("channel"), F.col("event_type")
    web, app, store = channel == "web", channel == "app", channel == "store"
    logged_in = (web & kind.isin("order", "return")) | app | (store & ~_has_card(seed, cid))
    u_mail = _uniform(seed, "email_typed", cid, k)
    typed = F.when(u_mail < 0.03, F.lit("test@example.com")).when(u_mail < 0.05, "unknown")
    typed = typed.when(u_mail < 0.07, F.lit(" ")).when(
        u_mail < 0.3, F.concat(F.upper(F.substring(_email(cid), 1, 1)),
                               F.substring(_email(cid), 2, 40), F.lit("  "))
    ).otherwise(F.regexp_replace(_email(cid), EMAIL_DOMAIN, "Example.NET"))  # fmt: skip
    pick_cookie = F.floor(_uniform(seed, "cookie_pick", cid, k) * cookies).cast("int")
    pick_device = F.floor(_uniform(seed, "device_pick", cid, k) * devices).cast("int")
    on_tablet = _sharing(seed, cid) & (_uniform(seed, "tablet", cid, k) < TABLET_EVENT_SHARE)
    no_card = _uniform(seed, "card_placeholder", cid, k) < 0.05
    return events.select(
        "*",
        F.when(logged_in, F.col("customer_id")).alias("crm_id"),
        F.when(web & (kind == "order"), typed).alias("email"),
        F.when(web, _cookie(seed, cid, pick_cookie)).alias("anonymous_id"),
        F.when(app, F.when(on_tablet, _tablet(cid)).otherwise(_device(seed, cid, pick_device)))
        .alias("device_id"),
        F.when(store, F.when(_has_card(seed, cid), _card(seed, cid)).when(no_card, F.lit("0")))
        .alias("loyalty_card"),
    )  # fmt: skip


def _phone(seed: int, cid: Column) -> tuple[Column, Column]:
    """The CRM's phone as written (national or international) and normalised (E.164)."""
    h = F.xxhash64(F.lit(seed), F.lit("phone"), cid)
    area = 200 + F.pmod(h, F.lit(800))
    line = F.pmod(F.floor(h / 1000), F.lit(10_000_000))
    written = F.when(
        _uniform(seed, "phone_style", cid) < 0.5,
        F.format_string("(%03d) %03d-%04d", area, F.floor(line / 10000), F.pmod(line, 10000)),
    ).otherwise(F.format_string("+1 %03d %07d", area, line))
    normalised = F.format_string("+1%03d%07d", area, line)
    has = _uniform(seed, "has_phone", cid) < PHONE_SHARE
    return F.when(has, written), F.when(has, normalised)


def customer_identifiers(customers: DataFrame, seed: int) -> DataFrame:
    """The customers table with the CRM's ``email``, ``phone`` and ``loyalty_card``."""
    cid = _cid()
    return customers.select(
        "*", _email(cid).alias("email"), _phone(seed, cid)[0].alias("phone"),
        F.when(_has_card(seed, cid), _card(seed, cid)).alias("loyalty_card"),
    )  # fmt: skip


def logins(events: DataFrame, seed: int) -> DataFrame:
    """``identity_edges``: each cookie logged in once, at the customer's first event."""
    first = events.where(_k() == 2).select("customer_id", F.col("event_time").alias("login_time"))
    cid = _cid()
    cookies, _ = _counts(seed, cid)
    return first.select(
        F.explode(F.sequence(F.lit(0), cookies - 1)).alias("j"), "customer_id", "login_time"
    ).select(
        _cookie(seed, _cid(), F.col("j")).alias("anonymous_id"),
        F.col("customer_id").alias("crm_id"), "login_time",
    )  # fmt: skip


def truth(customer_ids: DataFrame, seed: int) -> DataFrame:
    """``identity_truth``: ``identifier_type``, ``identifier`` (normalised), ``customer_id``."""
    cid = _cid()
    cookies, devices = _counts(seed, cid)

    def rows(kind: str, value: Column) -> DataFrame:
        return customer_ids.select(
            F.lit(kind).alias("identifier_type"), value.alias("identifier"), "customer_id"
        ).where(F.col("identifier").isNotNull())

    many = [
        customer_ids.select(F.lit(kind).alias("identifier_type"), F.explode(F.transform(
            F.sequence(F.lit(0), n - 1), make)).alias("identifier"), "customer_id")
        for kind, n, make in (("anonymous_id", cookies, lambda j: _cookie(seed, _cid(), j)),
                              ("device_id", devices, lambda j: _device(seed, _cid(), j)))
    ]  # fmt: skip
    parts = [
        rows("crm_id", F.col("customer_id")), rows("email", _email(cid)),
        rows("phone", _phone(seed, cid)[1]),
        rows("loyalty_card", F.when(_has_card(seed, cid), _card(seed, cid))),
        rows("device_id", F.when(_sharing(seed, cid), _tablet(cid))), *many,
    ]  # fmt: skip
    result = parts[0]
    for part in parts[1:]:
        result = result.unionByName(part)
    return result
