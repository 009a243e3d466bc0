"""The last check on every reply before it is queued: it may state only what the
configuration and the availability say.

Replies are built from templates and validated slot values, so this should never fire; it
is the net under that, and the measure the evaluation counts "invented facts" with. A reply
that fails is replaced by a plain templated one by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from callcatch.sms.pdu import normalise, segments

MAX_SEGMENTS = 2

_PRICE = re.compile(
    r"([$£€¥]\s*\d)|(\d+(?:[.,]\d+)?\s*(?:dollars?|bucks|usd|eur|euros?|pounds?|gbp)\b)"
    r"|\b(?:price|cost|charge|fee|quote)s?\s+(?:is|are|of|will be)\b",
    re.IGNORECASE,
)
_CLOCK = re.compile(r"\b([01]?\d|2[0-3])[:.]([0-5]\d)\b|\b(1[0-2]|0?[1-9])\s*(am|pm)\b", re.I)
_WEEKDAY = re.compile(r"\b(mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(day)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    problems: tuple[str, ...]


def check(reply: str, *, allowed_text: Iterable[str]) -> Verdict:
    """Does ``reply`` state only allowed facts, and fit in two SMS segments?

    ``allowed_text`` are the fragments that may carry times and days: the labels of the
    slots actually offered or booked, and the shop's next opening. Services need no check
    here: replies name them only from the catalogue.
    """
    problems: list[str] = []
    allowed = " ".join(allowed_text)
    if _PRICE.search(reply):
        problems.append("states a price")
    for match in _CLOCK.finditer(reply):
        if match.group(0) not in allowed:
            problems.append(f"states a time not offered: {match.group(0)}")
    for match in _WEEKDAY.finditer(reply):
        if match.group(0).lower() not in allowed.lower():
            problems.append(f"states a day not offered: {match.group(0)}")
    parts = segments(normalise(reply)).parts
    if parts > MAX_SEGMENTS:
        problems.append(f"needs {parts} SMS segments (at most {MAX_SEGMENTS})")
    return Verdict(not problems, tuple(problems))
