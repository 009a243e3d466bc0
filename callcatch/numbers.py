"""Caller numbers as Asterisk hands them to us, made callable (E.164) or marked as not."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers


class CallerStatus(StrEnum):
    CALLABLE = "callable"
    WITHHELD = "withheld"
    ANONYMOUS = "anonymous"
    INVALID = "invalid"


# What carriers and Asterisk put in the caller id when the number is not presented.
_WITHHELD = {
    "",
    "unknown",
    "unavailable",
    "restricted",
    "private",
    "withheld",
    "blocked",
    "p",
    "o",
}
_ANONYMOUS = {"anonymous", "anonymous.invalid"}
_DIALLABLE = re.compile(r"^\+?[0-9()\-. ]{2,32}$")


@dataclass(frozen=True)
class Caller:
    raw: str
    e164: str | None
    status: CallerStatus
    reason: str = ""


def classify(raw: str | None, country: str) -> Caller:
    """Normalise a caller id number for the shop's ``country`` (ISO 3166 alpha-2).

    Only numbers that libphonenumber accepts as valid become callable; the reason for
    anything else is kept so that a skipped call can say why.
    """
    text = (raw or "").strip()
    folded = text.lower().strip("<>\"' ")
    if folded in _ANONYMOUS:
        return Caller(text, None, CallerStatus.ANONYMOUS, "caller id is anonymous")
    if folded in _WITHHELD:
        return Caller(text, None, CallerStatus.WITHHELD, "caller id withheld")
    if not _DIALLABLE.match(text):
        return Caller(text, None, CallerStatus.INVALID, "caller id is not a phone number")
    try:
        parsed = phonenumbers.parse(text, country)
    except phonenumbers.NumberParseException as exc:
        return Caller(text, None, CallerStatus.INVALID, f"unparseable number: {exc}")
    if not phonenumbers.is_valid_number(parsed):
        return Caller(text, None, CallerStatus.INVALID, "not a valid number in any numbering plan")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return Caller(text, e164, CallerStatus.CALLABLE)


def masked(number: str | None) -> str:
    """A number fit for INFO logs: all but the last three digits hidden."""
    if not number:
        return "-"
    return "…" + number[-3:] if len(number) > 3 else "…"
