"""The daily credit budget (docs/control.md): what a job reserves, and how a reservation settles.

One budget item per UTC day lives in the jobs table under the key ``budget#YYYY-MM-DD`` (``#``
never appears in a job id, so it cannot collide with a job). It holds three counters:

- ``reserved``: credits held by jobs claimed for submission whose outcome is not known yet;
- ``spent``: credits the provider charged (its ``creditsUsed``; a SUBMIT_UNKNOWN job's reservation),
  less the refunds seen so far;
- ``committed`` = ``reserved`` + ``spent``, kept as its own counter because a DynamoDB condition
  cannot add: a reservation applies only if ``committed <= limit - credits``.

With a budget per batch (``CREDIT_BUDGET_PER_BATCH``), a job of a batch reserves on a second item,
``budget#batch#<batchId>``, with the same counters, in the same transaction: the claim needs room in
both. A batch's budget does not renew with the day; its jobs wait until it is raised.

A job's reservation is written on its record (``budget``: ``{day, batch?, reserved, state, refunded}``) in
the same transaction as the claim and as each settlement (``imagejobs.store``), and every one of
those transitions is conditional on the job's status: a duplicate delivery or a Lambda retry can
neither reserve twice nor settle twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from imagejobs import catalog

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.service_resource import Table

# Which credit budget a reservation did not fit: the UTC day's or its batch's.
BudgetScope = Literal["day", "batch"]

BUDGET_KEY_PREFIX = "budget#"
BATCH_BUDGET_KEY_PREFIX = BUDGET_KEY_PREFIX + "batch#"
# Models the catalog has no price for (video, models it does not know) reserve the dearest
# documented call (Kling master, 10 s): the settlement returns the difference at once.
UNPRICED_RESERVATION = 134

# Reservation states on the job record's ``budget`` map.
HELD = "held"  # claimed, submission outcome not known yet
SETTLED = "settled"  # the provider's creditsUsed (or the reservation, for SUBMIT_UNKNOWN) is spent
RELEASED = "released"  # nothing was charged (provider 400, 401/402/429/5xx/unreachable)


def day_of(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d")


def budget_key(day: str) -> str:
    return BUDGET_KEY_PREFIX + day


def batch_budget_key(batch_id: str) -> str:
    return BATCH_BUDGET_KEY_PREFIX + batch_id


def seconds_until_next_day(epoch_seconds: float) -> float:
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    midnight = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    return max(1.0, midnight.timestamp() - epoch_seconds)


def credits_to_reserve(model: str) -> int:
    """The most a submission of this model can cost: its dearest catalog price (the resolution
    that picks a tier travels in providerInput, unchecked), or UNPRICED_RESERVATION."""
    spec = catalog.get_model(model)
    if spec is None or not spec.credits:
        return UNPRICED_RESERVATION
    return max(spec.credits.values())


@dataclass(frozen=True)
class Reservation:
    """What a claim reserves: ``credits`` on ``day``'s item, allowed only up to ``limit`` (0: any),
    and, for a job of a batch with a batch budget, on the batch's item up to ``batch_limit``."""

    day: str
    credits: int
    limit: int
    batch: str | None = None
    batch_limit: int = 0

    @property
    def threshold(self) -> int | None:
        """The highest ``committed`` the day's item may show for this reservation to fit."""
        return None if self.limit <= 0 else self.limit - self.credits

    @property
    def batch_threshold(self) -> int | None:
        """The same for the batch's item (None: the batch has no budget)."""
        return None if self.batch is None or self.batch_limit <= 0 else self.batch_limit - self.credits

    def never_fits(self) -> BudgetScope | None:
        """Which budget ("day" or "batch") this reservation is dearer than as a whole, if any."""
        if (self.threshold or 0) < 0:
            return "day"
        if (self.batch_threshold or 0) < 0:
            return "batch"
        return None

    def describe(self, scope: BudgetScope) -> str:
        if scope == "batch":
            return f"the {self.batch_limit}-credit budget of batch {self.batch}"
        return f"the {self.limit}-credit budget of {self.day}"


def reservation_for(
    model: str, at: float, *, limit: int, batch: str | None, batch_limit: int
) -> Reservation | None:
    """What a claim of this model reserves now; None when no budget applies to the job."""
    batch_limited = batch is not None and batch_limit > 0
    if limit <= 0 and not batch_limited:
        return None
    return Reservation(
        day_of(at),
        credits_to_reserve(model),
        max(limit, 0),
        batch if batch_limited else None,
        batch_limit if batch_limited else 0,
    )


@dataclass(frozen=True)
class CounterChange:
    """Amounts added to one day's counters, and to its batch's when it has one (negative to return
    credits)."""

    day: str
    reserved: int = 0
    spent: int = 0
    batch: str | None = None

    @property
    def committed(self) -> int:
        return self.reserved + self.spent

    def is_empty(self) -> bool:
        return self.reserved == 0 and self.spent == 0


def held_reservation(record: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The record's reservation while it is still held (None when there is none to settle)."""
    held = (record or {}).get("budget")
    if isinstance(held, Mapping) and held.get("state") == HELD:
        return held
    return None


def settle_spent(held: Mapping[str, Any], credits_used: int | None) -> CounterChange:
    """The submission was accepted (creditsUsed known) or may have been (None: SUBMIT_UNKNOWN
    counts its whole reservation as spent)."""
    reserved = int(held["reserved"])
    spent = reserved if credits_used is None else int(credits_used)
    return CounterChange(str(held["day"]), reserved=-reserved, spent=spent, batch=_batch_of(held))


def release(held: Mapping[str, Any]) -> CounterChange:
    """Nothing was charged: the whole reservation goes back."""
    return CounterChange(str(held["day"]), reserved=-int(held["reserved"]), batch=_batch_of(held))


def refund_due(record: Mapping[str, Any] | None) -> CounterChange | None:
    """A refund the record shows (``creditsRefunded``) that its budget day has not been given yet.

    Refunds can appear on a later snapshot than the failure: each call returns only the part not
    returned before (``budget.refunded``), so calling again after a later snapshot is safe."""
    settled = (record or {}).get("budget")
    if not isinstance(settled, Mapping) or settled.get("state") != SETTLED:
        return None
    refunded = int(record.get("creditsRefunded") or 0) if record else 0
    delta = refunded - int(settled.get("refunded") or 0)
    if delta <= 0:
        return None
    return CounterChange(str(settled["day"]), spent=-delta, batch=_batch_of(settled))


def _batch_of(reservation: Mapping[str, Any]) -> str | None:
    batch = reservation.get("batch")
    return str(batch) if batch else None


@dataclass(frozen=True)
class BudgetDay:
    """One day's counters as ``imagejobs budget`` shows them."""

    day: str
    limit: int
    reserved: int
    spent: int

    @property
    def committed(self) -> int:
        return self.reserved + self.spent

    @property
    def available(self) -> int | None:
        return None if self.limit <= 0 else max(0, self.limit - self.committed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "limit": self.limit,
            "spent": self.spent,
            "reserved": self.reserved,
            "committed": self.committed,
            "available": self.available,
        }


def read_day(table: Table, day: str, limit: int) -> BudgetDay:
    return _read(table, budget_key(day), day, limit)


def read_batch(table: Table, batch_id: str, limit: int) -> BudgetDay:
    """A batch's counters (``day`` is the batch id here)."""
    return _read(table, batch_budget_key(batch_id), batch_id, limit)


def _read(table: Table, key: str, name: str, limit: int) -> BudgetDay:
    item: dict[str, Any] = dict(table.get_item(Key={"jobId": key}, ConsistentRead=True).get("Item") or {})
    return BudgetDay(name, limit, int(item.get("reserved") or 0), int(item.get("spent") or 0))
