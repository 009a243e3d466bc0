from __future__ import annotations

import pytest

from callcatch.numbers import CallerStatus, classify, masked


@pytest.mark.parametrize(
    "raw",
    [
        "+12125550123",
        "212-555-0123",
        "(212) 555-0123",
        "2125550123",
        "1-212-555-0123",
        "  +1 212 555 0123  ",
        "212.555.0123",
    ],
)
def test_us_number_forms_become_e164(raw: str) -> None:
    caller = classify(raw, "US")
    assert caller.status is CallerStatus.CALLABLE
    assert caller.e164 == "+12125550123"
    assert caller.reason == ""


def test_us_international_prefix_011() -> None:
    caller = classify("011442079460958", "US")
    assert caller.status is CallerStatus.CALLABLE
    assert caller.e164 == "+442079460958"


def test_00_is_not_the_us_international_prefix() -> None:
    caller = classify("00442079460958", "US")
    assert caller.status is CallerStatus.INVALID
    assert caller.e164 is None


def test_gb_national_and_00_forms() -> None:
    assert classify("020 7946 0958", "GB").e164 == "+442079460958"
    assert classify("0012125550123", "GB").e164 == "+12125550123"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("", CallerStatus.WITHHELD),
        (None, CallerStatus.WITHHELD),
        ("   ", CallerStatus.WITHHELD),
        ("\t\n", CallerStatus.WITHHELD),
        ("Unknown", CallerStatus.WITHHELD),
        ("restricted", CallerStatus.WITHHELD),
        ("PRIVATE", CallerStatus.WITHHELD),
        ("anonymous", CallerStatus.ANONYMOUS),
        ("Anonymous", CallerStatus.ANONYMOUS),
        ('"Anonymous"', CallerStatus.ANONYMOUS),
        ("anonymous.invalid", CallerStatus.ANONYMOUS),
        ("<script>alert(1)</script>", CallerStatus.INVALID),
        ("1" * 40, CallerStatus.INVALID),
        ("ABCDEF", CallerStatus.INVALID),
        ("+000", CallerStatus.INVALID),
        ("0", CallerStatus.INVALID),
        ("101", CallerStatus.INVALID),
        ("\uff12\uff11\uff12\uff15\uff15\uff15\uff10\uff11\uff12\uff13", CallerStatus.INVALID),
        ("\u0662\u0661\u0662\u0665\u0665\u0665\u0660\u0661\u0662\u0663", CallerStatus.INVALID),
        ("+15551234567", CallerStatus.INVALID),
        ("212555O123", CallerStatus.INVALID),
        ("2125550123\x00", CallerStatus.INVALID),
    ],
)
def test_odd_caller_ids_are_not_callable(raw: str | None, status: CallerStatus) -> None:
    caller = classify(raw, "US")
    assert caller.status is status
    assert caller.e164 is None
    assert caller.reason


def test_raw_keeps_what_asterisk_sent_without_padding() -> None:
    assert classify("  Anonymous ", "US").raw == "Anonymous"
    assert classify("<script>", "US").raw == "<script>"


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        ("+12125550123", "…123"),
        ("212-555-0123", "…123"),
        ("1234", "…234"),
        ("123", "…"),
        ("", "-"),
        (None, "-"),
    ],
)
def test_masked_shows_only_the_last_three_digits(number: str | None, shown: str) -> None:
    assert masked(number) == shown


def test_masked_never_contains_the_leading_digits() -> None:
    assert "212555" not in masked("+12125550123")
