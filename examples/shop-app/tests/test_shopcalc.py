from decimal import Decimal

import pytest

from shopcalc import discount, total


def test_total_adds_vat() -> None:
    assert total(["10.00", "5.50"]) == Decimal("18.60")


def test_total_of_nothing_is_zero() -> None:
    assert total([]) == Decimal("0.00")


def test_discount() -> None:
    assert discount(Decimal("18.60"), 10) == Decimal("16.74")


def test_discount_out_of_range() -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        discount(Decimal(1), 120)
