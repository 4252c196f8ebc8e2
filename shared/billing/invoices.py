"""Invoices: priced from the hourly usage rollups, in integer minor units, never floats.

A billing period is a calendar month (UTC). While it is open, the tenant's ``usage`` invoice is a draft
refreshed from the rollups whenever it is read. Finalizing a period (the worker's periodic task once the
period and the metering grace are over, or ``berth admin billing finalize PERIOD`` or the admin route on
demand) writes its lines once; afterwards database triggers refuse any change to them. Usage that reaches
a finalized period later is billed by a separate ``adjustment`` invoice, written and finalized in one go,
whose lines are the difference.

Rounding, per line: amount = quantity x unit price / price scale (``shared.billing.meters``), rounded half
up to the minor unit. The total is the sum of the lines' amounts, so lines always add up to it exactly. An
adjustment line's amount is the amount of the period's whole quantity less what earlier invoices of the
period billed for that meter, so the period's invoices together bill exactly the rounded price of its usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from shared.billing.meters import METER_NAMES, METERS

if TYPE_CHECKING:
    from shared.billing.plan_store import Plan


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"


def period_containing(moment: datetime) -> Period:
    """The calendar month (UTC) that holds ``moment``."""
    moment = moment.astimezone(UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + (moment.month == 12), moment.month % 12 + 1, 1, tzinfo=UTC)
    return Period(start, end)


def parse_period(label: str) -> Period:
    """``YYYY-MM`` as a period; ValueError otherwise."""
    try:
        start = datetime.strptime(label, "%Y-%m").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{label!r} is not a period; write YYYY-MM") from exc
    return period_containing(start)


@dataclass(frozen=True)
class Line:
    meter: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    price_unit: str
    amount: int


def line_amount(meter: str, quantity: Decimal, unit_price: Decimal) -> int:
    """quantity x unit price / price scale, rounded half up to a whole minor unit."""
    exact = quantity * unit_price / METERS[meter].price_scale
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def price_usage(quantities: dict[str, Decimal], plan: Plan) -> list[Line]:
    """One line per meter used, in the meters' order."""
    lines = []
    for meter in METER_NAMES:
        quantity = quantities.get(meter, Decimal(0))
        if quantity == 0:
            continue
        price = plan.price(meter)
        lines.append(
            Line(
                meter,
                quantity,
                METERS[meter].unit,
                price,
                METERS[meter].price_unit,
                line_amount(meter, quantity, price),
            )
        )
    return lines
