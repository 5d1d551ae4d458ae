"""Price arithmetic for a small shop."""

from decimal import ROUND_HALF_UP, Decimal

__version__ = "1.4.2"


def total(prices: list[str], vat_percent: str = "20") -> Decimal:
    """Sum of ``prices`` with VAT, rounded to cents."""
    net = sum((Decimal(p) for p in prices), Decimal(0))
    gross = net * (1 + Decimal(vat_percent) / 100)
    return gross.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def discount(amount: Decimal, percent: int) -> Decimal:
    if not 0 <= percent <= 100:
        raise ValueError(f"discount must be between 0 and 100, got {percent}")
    return (amount * (100 - percent) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
