"""What one customer text says, for the booking conversation's slots.

:class:`Extractor` reads a text deterministically: catalogue keywords (with mild typos),
configured places and postal codes, street addresses, simple name cues, and time wishes
through ``dateparser`` plus our own parts of day and clock times. It also checks what a
language model proposed (:meth:`Extractor.validate`): the model may fill gaps but never
decides, so a value that the catalogue, the area or the customer's own words do not
support is dropped. Nothing here raises on odd input; a part that fails yields nothing.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

import dateparser

from callcatch.config import Config, ServiceConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
Span = tuple[int, int]


class Urgency(StrEnum):
    EMERGENCY = "emergency"
    URGENT = "urgent"
    ROUTINE = "routine"


@dataclass(frozen=True)
class TimeWish:
    """The window the caller asked for, tz-aware UTC; ``text`` is how they said it."""

    earliest: datetime
    latest: datetime
    asap: bool
    text: str


@dataclass(frozen=True)
class Extracted:
    """What one message told us; every field is optional."""

    service: str | None = None
    unknown_service: str | None = None
    urgency: Urgency | None = None
    gas: bool = False
    place: str | None = None
    postcode: str | None = None
    address: str | None = None
    out_of_area: str | None = None
    name: str | None = None
    time: TimeWish | None = None


def merge(base: Extracted, extra: Extracted) -> Extracted:
    """``base`` (deterministic) wins field by field; ``extra`` (the model's) fills gaps."""
    values = {}
    for f in fields(Extracted):
        mine = getattr(base, f.name)
        values[f.name] = mine if mine not in (None, False) else getattr(extra, f.name)
    return Extracted(**values)


# -- small text helpers ------------------------------------------------------------------


_QUOTES = str.maketrans("\u2019\u2018\u201c\u201d", "''\"\"")


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    return text.translate(_QUOTES)


def _lower(text: str) -> str:
    """Lower case with every index unchanged, so spans found in it fit the original."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _mask(text: str, spans: Iterable[Span]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _phrase(phrase: str, inflect: bool = True) -> re.Pattern[str]:
    """A keyword as a whole word or phrase; ``inflect`` also takes pipes, leaked, leaking."""
    body = r"\s+".join(re.escape(w) for w in phrase.lower().split())
    tail = r"(?:s|es|ed|ing|y)?" if inflect and phrase[-1:].isalpha() else ""
    return re.compile(rf"(?<![\w'-]){body}{tail}(?![\w'-])", re.IGNORECASE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _safe(fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception:  # one failing part must not lose the rest of the message
        log.exception("slot extraction failed on one part; going on without it")
        return default


_VOWELS = set("aeiouy")
# Real words one letter away from a keyword: never read them as typos.
_NOT_TYPOS = frozenset({"leaving", "leading", "dropping", "dropped", "blacked", "instill"})


def _typo(word: str, keyword: str) -> bool:
    """A mild typo of ``keyword``: one swap of neighbours, one vowel changed, added or
    lost, or one letter doubled or undoubled; "leaving" is not a typo of "leaking"."""
    if word == keyword or word in _NOT_TYPOS or abs(len(word) - len(keyword)) > 1:
        return False
    if difflib.SequenceMatcher(None, word, keyword).ratio() < 0.8:
        return False
    if len(word) == len(keyword):
        diff = [i for i, (a, b) in enumerate(zip(word, keyword, strict=True)) if a != b]
        if len(diff) == 2 and diff[1] == diff[0] + 1:
            return word[diff[0]] == keyword[diff[1]] and word[diff[1]] == keyword[diff[0]]
        return len(diff) == 1 and {word[diff[0]], keyword[diff[0]]} <= _VOWELS
    short, long = sorted((word, keyword), key=len)
    for i, letter in enumerate(long):
        if long[:i] + long[i + 1 :] == short:
            doubled = (i > 0 and long[i - 1] == letter) or long[i + 1 : i + 2] == letter
            return letter in _VOWELS or doubled
    return False


# -- the service catalogue ---------------------------------------------------------------


@dataclass(frozen=True)
class _Keyword:
    index: int
    phrase: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class _Hit:
    index: int
    length: int
    span: Span


class _Catalogue:
    def __init__(self, services: tuple[ServiceConfig, ...]) -> None:
        self.services = services
        self.keywords = [
            _Keyword(i, p, _phrase(p))
            for i, s in enumerate(services)
            for p in dict.fromkeys((s.name.lower(), *s.keywords))
        ]
        self.singles = [k for k in self.keywords if " " not in k.phrase and len(k.phrase) >= 5]

    def hits(self, text: str) -> list[_Hit]:
        found = [
            _Hit(k.index, len(k.phrase), m.span())
            for k in self.keywords
            for m in k.pattern.finditer(text)
        ]
        exact = {h.span for h in found}
        for m in re.finditer(r"[^\W\d_]{5,}", text):
            if m.span() in exact:
                continue
            word = m.group().lower()
            for k in self.singles:
                if _typo(word, k.phrase) or _typo(word.removesuffix("s"), k.phrase):
                    found.append(_Hit(k.index, len(k.phrase), m.span()))
        return found

    def best(self, text: str) -> ServiceConfig | None:
        """The longest keyword found wins; ties go to the earlier catalogue entry."""
        hits = self.hits(text)
        if not hits:
            return None
        best = max(hits, key=lambda h: (h.length, -h.index))
        return self.services[best.index]

    def name_for(self, proposed: str) -> str | None:
        wanted = " ".join(proposed.lower().split())
        for service in self.services:
            if service.name.lower() == wanted:
                return service.name
        found = self.best(proposed)
        return found.name if found else None


# -- requests for what the catalogue lacks ------------------------------------------------

_VERB = r"(?P<verb>fix|do|repair|install|replace|fit|look\s+at|check|service|clean|build|paint)"
_OBJECT = r"(?P<x>[^.,!?;:\n()]+)"
_REQUESTS = [
    re.compile(
        rf"\b(?:can|could|would|will)\s+(?:you|u|ya)\s+(?:guys\s+)?(?:please\s+|pls\s+)?"
        rf"(?:come\s+(?:and\s+)?)?{_VERB}\s+{_OBJECT}",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\bdo\s+(?:you|u|ya)\s+(?:guys\s+)?(?:also\s+)?{_VERB}\s+{_OBJECT}", re.IGNORECASE
    ),
    re.compile(
        rf"\b(?:i|we)\s*(?:need|want|would\s+like|'d\s+like)\s+(?:someone\s+to\s+{_VERB}\s+)?"
        rf"{_OBJECT}",
        re.IGNORECASE,
    ),
    re.compile(rf"\blooking\s+for\s+(?:someone\s+to\s+{_VERB}\s+)?{_OBJECT}", re.IGNORECASE),
]
_DETERMINERS = _words("a an my our the some your his her their me us new another other")
_CUT = _words(
    """today tomorrow tonight asap please pls plz now this next on at in for by before after
    when if and or but because cuz thanks thx too also soon sometime asap urgently there
    here fixed done repaired looked sorted installed replaced cleaned checked morning
    afternoon evening weekend week anytime any earlier later sooner"""
)
_GENERIC = _words(
    """someone somebody help plumber plumbers plumbing appointment quote quotes estimate
    estimates visit it this that them you time slot booking service services technician
    tech guy person man anything something one to info information price call callback
    hand favor favour look work job emergency emergencies callouts callout weekends
    evenings repairs repair fix installation installs answer reply book"""
)


def _object_phrase(raw: str) -> str | None:
    words: list[str] = []
    for word in raw.split():
        if word.lower() in _CUT or word.lower() in _WEEKDAYS or len(words) == 4:
            break
        words.append(word)
    while words and words[0].lower() in _DETERMINERS:
        words.pop(0)
    if not words or words[0].lower() in _GENERIC or any(c.isdigit() for c in words[0]):
        return None
    return " ".join(words)


# -- places, postcodes and addresses ------------------------------------------------------

_STREET = (
    r"(?:st|street|ave|avenue|av|rd|road|blvd|boulevard|ln|lane|dr|drive|ct|court|pl|place|"
    r"ter|terrace|pkwy|parkway|hwy|highway|sq|square|cres|crescent|grove|gardens|broadway|way)"
)
_ADDRESS = re.compile(
    rf"(?<![\w/:.-])(?P<no>\d{{1,5}}[a-z]?(?:-\d{{1,5}})?)\s+"
    rf"(?P<street>(?:(?:\d{{1,3}}(?:st|nd|rd|th)|[^\W\d_][\w'.-]*)\s+){{0,3}}{_STREET})\b\.?"
    r"(?:,?\s*(?:apt|apartment|unit|suite|ste|fl|floor|#)\.?\s*#?[\w-]+)?",
    re.IGNORECASE,
)
_NOT_STREET = _words(
    "on the in a my at to of and or for by is it min mins minute minutes hours hrs days"
)
_POSTCODES = {
    "US": r"(?<![\d-])\d{5}(?:-\d{4})?(?![\d-])",
    "GB": r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b",
    "CA": r"\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b",
}
_ANY_POSTCODE = r"(?<![\d-])\d{4,6}(?![\d-])"
# Not HI, IN, ME, OK, OR: in capitals they are words ("call ME").
_US_STATES = _words(
    "AL AK AZ AR CA CO CT DE FL GA ID IL IA KS KY LA MD MA MI MN MS MO MT NE NV NH NJ NM NY "
    "NC ND OH PA RI SC SD TN TX UT VT VA WA WV WI WY DC"
)
_TOWN = r"[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2}"
_ELSEWHERE = [
    re.compile(rf"\b(?:{_TOWN}),?\s+(?:{'|'.join(sorted(_US_STATES))})\b"),
    re.compile(
        rf"\b(?i:in|live\s+in|located\s+in|based\s+in|over\s+in)\s+(?:(?i:the)\s+)?({_TOWN})"
    ),
]
_PHONE = re.compile(r"\+?\d[\d\s().-]{8,}\d")

_MONTHS = _words(
    "january february march april may june july august september october november december "
    "jan feb mar apr jun jul aug sep sept oct nov dec enero febrero marzo abril mayo junio "
    "julio agosto septiembre octubre noviembre diciembre"
)
_WEEKDAYS = {
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "tues": 1, "wednesday": 2, "wed": 2,
    "weds": 2, "thursday": 3, "thu": 3, "thur": 3, "thurs": 3, "friday": 4, "fri": 4,
    "saturday": 5, "sat": 5, "sunday": 6, "sun": 6, "lunes": 0, "martes": 1,
    "miércoles": 2, "miercoles": 2, "jueves": 3, "viernes": 4, "sábado": 5, "sabado": 5,
    "domingo": 6,
}  # fmt: skip
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


# -- names ----------------------------------------------------------------------------------

_NAME_WORD = r"[^\W\d_][^\W\d_'-]*(?:['-][^\W\d_]+)?"
_NAME = rf"(?P<name>{_NAME_WORD}(?:\s+{_NAME_WORD}){{0,2}})"
_NAME_CUES = [
    # (pattern, explicit: a lower-case name is still a name after "my name is")
    (re.compile(rf"\b(?i:my\s+name\s+is|my\s+name's|name's|name\s*:)\s+{_NAME}"), True),
    (re.compile(rf"\b(?i:this\s+is|it's|its|it\s+is)\s+{_NAME}\s+(?i:here)\b"), False),
    (re.compile(rf"\b(?i:this\s+is)\s+{_NAME}"), False),
    (re.compile(rf"\b(?i:it's|its)\s+{_NAME}\s*(?:[,.!]|$)"), False),
    (re.compile(rf"(?<![\w'])(?i:i'm|im|i\s+am)\s+{_NAME}"), False),
    (re.compile(rf"^\s*(?:(?i:hi|hello|hey),?\s+)?{_NAME}\s+(?i:here)\b"), False),
    # A text signed at the end: "blocked toilet, 8 Grand St, Joe here".
    (re.compile(rf"[,.;!]\s*{_NAME}\s+(?i:here)\s*[.!]*\s*$"), False),
    (re.compile(rf"(?:^|\s)[-\u2013\u2014~]+\s*{_NAME}\s*[.!]*\s*$"), False),
    (
        re.compile(rf"\b(?i:thanks|thank\s+you|thx|cheers|regards),?\s+{_NAME}\s*[.!]*\s*$"),
        False,
    ),
]
_NOT_NAMES = _words(
    """available free home out away back not so very really looking calling having trying
    sorry interested ok okay good fine here there just also still new the a an in at on from
    around near located based busy working off going gonna wondering writing texting asking
    after flexible currently usually hoping needing with urgent emergency asap the a gas
    water leaking flooded stuck desperate calling pretty super still literally hi hello hey
    thanks please yes yeah no nope sure and or but my your our his her their it is was be
    i me we you they he she that this what when where who how why tomorrow today tonight
    morning afternoon evening night week weekend next any anytime whenever plumbing plumber
    booking appointment fine great glad happy"""
)


# -- time wishes -----------------------------------------------------------------------------

_H = (
    r"(?:las?\s+)?(?:(?<![\d/:.])(?P<{p}h>\d{{1,2}})(?::(?P<{p}m>\d{{2}}))?\s*"
    r"(?P<{p}ap>[ap]\.?m\b\.?)?(?![\d/:])|(?P<{p}noon>noon|midday|mediod[ií]a))"
)


def _hour(p: str) -> str:
    return _H.format(p=p)


_CLOCKS = [
    (
        "range",
        re.compile(
            rf"(?:\b(?P<prep>between|btw|btwn|from|entre|de)\s+)?{_hour('a')}\s*"
            rf"(?:-|\u2013|to|and|till|until|til|y|a)\s*{_hour('b')}"
        ),
    ),
    (
        "after",
        re.compile(
            rf"\b(?:after|from|past|not\s+before|despu[eé]s\s+de|desde|a\s+partir\s+de)\s+"
            rf"{_hour('a')}"
        ),
    ),
    (
        "before",
        re.compile(rf"\b(?:before|by|until|till|til|no\s+later\s+than|antes\s+de)\s+{_hour('a')}"),
    ),
    (
        "at",
        re.compile(rf"(?:\b(?:at|around|sobre|hacia)\s+|\ba\s+(?=las?\s)|@\s*|~\s*){_hour('a')}"),
    ),
    ("at", re.compile(rf"\b{_hour('a')}")),
]
_DAYISH = r"(?:today|tomorrow|tmrw|tmr|tomorow|2moro|mon|tue|tues|wed|thu|thurs|fri|sat|[a-z]+day)"
_PARTS = [
    (
        re.compile(
            r"\b(?:morning|mornin|morn|first\s+thing)\b"
            rf"|\b{_DAYISH}\s+a\.?m\b"
            r"|\b(?:por|en|de)\s+la\s+ma(?:ñ|n)ana\b"
        ),
        time(8),
        time(12),
    ),
    (
        re.compile(
            r"\b(?:afternoon|arvo|(?:por|en|de)\s+la\s+tarde|esta\s+tarde)\b"
            rf"|\b{_DAYISH}\s+p\.?m\b"
        ),
        time(12),
        time(17),
    ),
    (
        re.compile(
            r"\b(?:evening|evenings|tonight|after\s+work|(?:por|en|de)\s+la\s+noche|esta\s+noche)\b"
        ),
        time(17),
        time(20),
    ),
    (re.compile(r"\bafter\s+lunch(?:time)?\b"), time(13), time(17)),
    (re.compile(r"\bbefore\s+lunch(?:time)?\b"), time(8), time(12)),
    (re.compile(r"\b(?:lunch|lunchtime|lunch\s+time|midday|mediod[ií]a)\b"), time(11), time(14)),
]
_WEEKDAY_RE = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)"
_DAY = re.compile(
    r"(?P<dat>\bday\s+after\s+tomorrow\b|\bpasado\s+ma(?:ñ|n)ana\b)"
    r"|(?P<tomorrow>\b(?:tomorrow|tmrw|tmrow|tmr|tmw|tomoz|tomorow|tommorow|tommorrow|tomorro"
    r"|tomoro|2moro|2morrow|2mrw)\b)"
    r"|(?P<today>\b(?:today|2day|tonight|hoy|esta\s+noche|esta\s+tarde|this\s+(?:morning|"
    r"afternoon|evening))\b)"
    r"|(?P<manana>(?<!la\s)\bma(?:ñ|n)ana\b)"
    rf"|(?P<weekday>(?<!['\w])(?:(?P<prefix>next|this|on|el|este|el\s+pr[oó]ximo|"
    rf"pr[oó]ximo)\s+)?(?P<wd>{_WEEKDAY_RE})\b)"
    rf"|(?P<date>\b(?:(?:{_MONTH_RE})\.?\s+\d{{1,2}}{_ORD}?\b"
    rf"|\d{{1,2}}{_ORD}?\s+(?:of\s+|de\s+)?(?:{_MONTH_RE})\b"
    r"|\d{1,2}/\d{1,2}(?:/\d{2,4})?(?![\d/])))"
    rf"|(?P<ordinal>\b(?:the|on)\s+(?P<dom>\d{{1,2}}){_ORD}\b(?!\s*(?:floor|fl\b|flr|st\b)))"
    r"|(?P<indays>\bin\s+(?:\d{1,2}|a|one|two|three|a\s+couple\s+of)\s+(?:days?|weeks?)\b)"
)
_RELATIVE = re.compile(
    r"\b(?:in|en)\s+(?P<n>\d{1,2}|an?|one|two|three|half\s+an?|una|media|a\s+couple(?:\s+of)?"
    r"|a\s+few|couple(?:\s+of)?)\s*(?P<unit>hours?|hrs?|h|minutes?|mins?|horas?|minutos?)\b"
)
_ASAP = re.compile(
    r"\b(?:asap|a\.s\.a\.p|as\s+soon\s+as\s+(?:possible|poss|you\s+can|u\s+can|ya\s+can)"
    r"|right\s+away|right\s+now|straight\s+away|immediately|lo\s+antes\s+posible|cuanto\s+antes"
    r"|lo\s+m[aá]s\s+pronto|ya\s+mismo|ahora\s+mismo)\b"
    r"|(?<!\bjust\s)\bnow\b(?=\s*(?:please|pls|plz)?\s*(?:[!.?]|$))"
)
_ANYTIME = re.compile(
    r"\b(?:any\s*time|whenever|any\s+day|anyday|flexible|cualquier\s+(?:d[ií]a|hora|momento))\b"
)
_NEXT_WEEK = re.compile(
    r"\bnext\s+week\b|\b(?:la\s+)?semana\s+que\s+viene\b|\b(?:la\s+)?pr[oó]xima\s+semana\b"
)
_THIS_WEEK = re.compile(r"\b(?:this|esta)\s+(?:week|semana)\b|\blater\s+this\s+week\b")
_WEEKEND = re.compile(r"\b(?:this\s+|next\s+|the\s+)?weekend\b|\bfin\s+de\s+semana\b")
_NUMBERS = {"a": 1, "an": 1, "one": 1, "una": 1, "two": 2, "three": 3, "couple": 2, "few": 3}

# -- urgency ---------------------------------------------------------------------------------

_URGENT = re.compile(
    r"\b(?:asap|a\.s\.a\.p|urgent|urgently|urgente|today|hoy|right\s+away|as\s+soon\s+as"
    r"|immediately|right\s+now|cuanto\s+antes|lo\s+antes\s+posible)\b"
)
_EMERGENCY_WORDS = re.compile(r"\b(?:emergency|emergencia|urgencia)\b")
_CALM = re.compile(
    r"\b(?:no\s+rush|not\s+urgent|no\s+hurry|not\s+an?\s+emergency|isn'?t\s+an?\s+emergency"
    r"|not\s+a\s+big\s+deal|no\s+es\s+urgente|sin\s+prisa)\b"
)
_NEGATED = re.compile(r"\b(?:not|no|isn'?t|nothing|n't)\s+(?:\w+\s+)?$")


def _negated(low: str, start: int) -> bool:
    return bool(_NEGATED.search(low[max(0, start - 16) : start]))


_Window = tuple[datetime, datetime]
_SOON: _Window = (datetime.min.replace(tzinfo=UTC), datetime.min.replace(tzinfo=UTC))
_Part = tuple[Span, time, time]


def _part(low: str) -> _Part | None:
    """The first part of day named: its span, start and end."""
    found = [(m.span(), a, b) for rx, a, b in _PARTS for m in rx.finditer(low)]
    return min(found) if found else None


@dataclass(frozen=True)
class _Clock:
    kind: str  # range, after, before, at
    start: time
    end: time | None
    span: Span


class Extractor:
    """Deterministic slot extraction for one shop's configuration."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.zone = ZoneInfo(config.business.timezone)
        self.catalogue = _Catalogue(config.services)
        self.places = [(p, _phrase(p, inflect=False)) for p in config.area.places]
        self.prefixes = tuple(_postcode_key(p) for p in config.area.postcode_prefixes)
        country = config.business.country
        self.postcode_re = re.compile(_POSTCODES.get(country, _ANY_POSTCODE), re.IGNORECASE)
        self.gas = [_phrase(k) for k in config.emergency.gas_keywords]
        self.emergency = [_phrase(k) for k in config.emergency.keywords]
        self.slot = timedelta(minutes=config.booking.slot_minutes)
        self.days_ahead = config.booking.days_ahead
        self.settings = {
            "TIMEZONE": config.business.timezone,
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "future",
            "DATE_ORDER": "MDY" if country in ("US", "CA", "PH") else "DMY",
        }
        # dateparser loads its language data on first use: not during a customer's reply.
        _safe(lambda: self._dateparse("tomorrow", datetime.now(UTC)), None)

    # -- the deterministic reading -------------------------------------------------------

    def extract(self, text: str, now: datetime) -> Extracted:
        """Everything one message says that the deterministic rules can vouch for."""
        return _safe(lambda: self._extract(text, now), Extracted())

    def _extract(self, text: str, now: datetime) -> Extracted:
        text = _clean(text)
        low = _lower(text)
        addresses: list[tuple[str, Span]] = _safe(lambda: self._addresses(text), [])
        postcodes: list[tuple[str, Span]] = _safe(
            lambda: self._postcodes(text, [s for _, s in addresses]), []
        )
        gas_spans = [m.span() for p in self.gas for m in p.finditer(low)]
        nothing: tuple[str | None, list[Span]] = (None, [])
        unknown, verb_spans = _safe(lambda: self._unknown(text), nothing)
        verb_spans = [s for s in verb_spans if self.catalogue.hits(text[s[0] : s[1]])]
        service = _safe(lambda: self.catalogue.best(_mask(text, gas_spans + verb_spans)), None)
        place = _safe(lambda: self._place(text), None)
        inside = [c for c, _ in postcodes if self._in_area(c)]
        outside = [c for c, _ in postcodes if not self._in_area(c)]
        masked = _mask(low, [s for _, s in addresses] + [s for _, s in postcodes])
        masked = _mask(masked, [m.span() for m in _PHONE.finditer(masked)])
        wish = _safe(lambda: self._time(masked, text, now), None)
        return Extracted(
            service=service.name if service else None,
            unknown_service=unknown,
            urgency=_safe(lambda: self._urgency(low, bool(gas_spans), service, wish, now), None),
            gas=bool(gas_spans),
            place=place,
            postcode=inside[0] if inside else None,
            address=addresses[0][0] if addresses else None,
            out_of_area=_safe(lambda: self._elsewhere(text), None)
            or (outside[0] if outside else None),
            name=_safe(lambda: self._name(text), None),
            time=wish,
        )

    def _addresses(self, text: str) -> list[tuple[str, Span]]:
        found = []
        for m in _ADDRESS.finditer(text):
            first = m.group("street").split()[0].lower()
            if first in _NOT_STREET:
                continue
            found.append((m.group().strip(" .,"), m.span()))
        return found

    def _postcodes(self, text: str, addresses: list[Span]) -> list[tuple[str, Span]]:
        found = []
        for m in self.postcode_re.finditer(text):
            if any(start == m.start() for start, _ in addresses):
                continue  # a house number such as 11201 Main St
            found.append((m.group().upper(), m.span()))
        return found

    def _in_area(self, code: str) -> bool:
        return _postcode_key(code).startswith(self.prefixes) if self.prefixes else False

    def _place(self, text: str) -> str | None:
        found = [(m.start(), p) for p, rx in self.places for m in rx.finditer(text)]
        return min(found)[1] if found else None

    def _elsewhere(self, text: str) -> str | None:
        """A town named clearly ("in Newark", "Newark NJ") that is not a configured place."""
        for rx in _ELSEWHERE:
            for m in rx.finditer(text):
                value = m.group(m.lastindex or 0).strip()
                words = value.split()
                if words[0].lower() in _NOT_NAMES or words[0].lower() in _WEEKDAYS:
                    continue
                if words[0].lower() in _MONTHS or self._place(value) is not None:
                    continue
                if rx is _ELSEWHERE[0] and self.config.business.country != "US":
                    continue
                return value
        return None

    def _unknown(self, text: str) -> tuple[str | None, list[Span]]:
        """A thing asked for that no catalogue keyword covers, and the verb spans to hide
        ("replace" is a keyword of fixture installation, "replace my roof" is not)."""
        for rx in _REQUESTS:
            for m in rx.finditer(text):
                thing = _object_phrase(m.group("x"))
                if thing is None or self.catalogue.hits(thing):
                    continue
                verb = m.span("verb") if m.group("verb") else None
                return thing, [verb] if verb else []
        return None, []

    def _name(self, text: str) -> str | None:
        for rx, explicit in _NAME_CUES:
            for m in rx.finditer(text):
                name = self._name_words(m.group("name"), explicit)
                if name:
                    return name
        return None

    def _name_words(self, raw: str, explicit: bool) -> str | None:
        words: list[str] = []
        for word in raw.split():
            lowered = word.lower()
            if lowered in _NOT_NAMES or lowered in _WEEKDAYS or lowered in _MONTHS:
                break
            if not word[0].isupper() and not explicit:
                break
            if word.isupper() and len(word) > 1 and not explicit:
                break  # "I'M OUT", "ASAP"
            words.append(word if word[0].isupper() else word.capitalize())
        if not words or self._place(" ".join(words)) or self.catalogue.hits(words[0]):
            return None
        return " ".join(words)

    def _urgency(
        self,
        low: str,
        gas: bool,
        service: ServiceConfig | None,
        wish: TimeWish | None,
        now: datetime,
    ) -> Urgency | None:
        if gas:
            return Urgency.EMERGENCY
        calm = bool(_CALM.search(low))
        if any(m for p in self.emergency for m in p.finditer(low) if not _negated(low, m.start())):
            return Urgency.EMERGENCY
        if not calm and (_EMERGENCY_WORDS.search(low) or (service and service.emergency)):
            return Urgency.EMERGENCY
        urgent = any(not _negated(low, m.start()) for m in _URGENT.finditer(low))
        today = wish is not None and wish.latest <= self._midnight(
            now.astimezone(self.zone).date(), 1
        )
        if not calm and (urgent or (wish is not None and wish.asap) or today):
            return Urgency.URGENT
        if calm or wish is not None:
            return Urgency.ROUTINE
        return None

    # -- time wishes ---------------------------------------------------------------------

    def parse_time(self, text: str, now: datetime) -> TimeWish | None:
        """The time window a phrase asks for ("tomorrow after 3", "asap"), or None."""
        clean = _clean(text)
        return _safe(lambda: self._time(_lower(clean), clean, now), None)

    def _time(self, low: str, original: str, now: datetime) -> TimeWish | None:
        local_now = now.astimezone(self.zone)
        spans: list[Span] = []
        window = self._window(low, local_now, spans)
        asap = _ASAP.search(low)
        if asap:
            spans.append(asap.span())
        if window is None and asap is None:
            return None
        soon = asap is not None or window == _SOON
        if window is None or window == _SOON:
            window = (local_now, self._midnight(local_now.date(), 2))
        earliest, latest = window
        if earliest < local_now < latest:
            earliest = local_now
        said = " ".join(original[a:b].strip() for a, b in _union(spans))
        return TimeWish(earliest.astimezone(UTC), latest.astimezone(UTC), soon, said)

    def _window(self, low: str, now: datetime, spans: list[Span]) -> _Window | None:
        relative = _RELATIVE.search(low)
        if relative:
            spans.append(relative.span())
            moment = self._in_hours(relative, now)
            if moment is not None:
                return moment, moment + self.slot
        day, day_span, bare_today = self._day(low, now)
        next_week = _NEXT_WEEK.search(low)
        part = _part(low)
        if part:
            spans.append(part[0])
        clock = self._clock(low, part[1] if part else None)
        if clock:
            spans.append(clock.span)
        if day_span:
            spans.append(day_span)
        if next_week and day is None:
            spans.append(next_week.span())
            return self._next_week(now)
        if day is None and part is None and clock is None:
            return self._broad(low, now, spans)
        if bare_today and part is None and clock is None:
            return _SOON  # "today" alone: as soon as possible
        hours = self._hours(part, clock)
        if day is None:
            start = datetime.combine(now.date(), hours[0] or time(0), self.zone)
            day = now.date() if start > now else now.date() + timedelta(days=1)
        return self._on(day, hours)

    def _broad(self, low: str, now: datetime, spans: list[Span]) -> _Window | None:
        """This week, the weekend, or any time."""
        m = _THIS_WEEK.search(low)
        if m:
            spans.append(m.span())
            return now, self._midnight(now.date(), 7 - now.weekday())
        m = _WEEKEND.search(low)
        if m:
            spans.append(m.span())
            return self._weekend(now)
        m = _ANYTIME.search(low)
        if m:
            spans.append(m.span())
            return now, now + timedelta(days=self.days_ahead)
        return None

    def _midnight(self, day: date, plus: int = 0) -> datetime:
        return datetime.combine(day + timedelta(days=plus), time(0), self.zone)

    def _next_week(self, now: datetime) -> tuple[datetime, datetime]:
        monday = now.date() + timedelta(days=7 - now.weekday())
        return self._midnight(monday), self._midnight(monday, 7)

    def _weekend(self, now: datetime) -> tuple[datetime, datetime]:
        saturday = now.date() + timedelta(days=(5 - now.weekday()) % 7)
        if now.weekday() == 6:
            saturday = now.date() - timedelta(days=1)
        return max(now, self._midnight(saturday)), self._midnight(saturday, 2)

    def _in_hours(self, m: re.Match[str], now: datetime) -> datetime | None:
        word = m.group("n")
        if word.startswith(("half", "media")):
            amount, unit = 30, "minutes"
        else:
            amount = int(word) if word.isdigit() else _NUMBERS.get(word.split()[-1], 1)
            unit = "minutes" if m.group("unit").startswith("m") else "hours"
        parsed = self._dateparse(f"in {amount} {unit}", now)
        return parsed.astimezone(self.zone) if parsed else None

    def _dateparse(self, phrase: str, now: datetime) -> datetime | None:
        base = now.astimezone(self.zone).replace(tzinfo=None)
        settings = {**self.settings, "RELATIVE_BASE": base}
        return dateparser.parse(phrase, languages=["en", "es"], settings=settings)  # type: ignore[no-any-return]

    def _day(self, low: str, now: datetime) -> tuple[date | None, Span | None, bool]:
        """The first day named: (date, span, whether it was a bare "today")."""
        for m in _DAY.finditer(low):
            if _negated(low, m.start()):
                continue  # "not today"
            day = self._day_of(m, low, now)
            if day is not None:
                bare = m.group("today") in ("today", "2day", "hoy")
                return day, m.span(), bare
        return None, None, False

    def _day_of(self, m: re.Match[str], low: str, now: datetime) -> date | None:
        today = now.date()
        if m.group("dat"):
            return today + timedelta(days=2)
        if m.group("tomorrow") or m.group("manana"):
            return today + timedelta(days=1)
        if m.group("today"):
            return today
        if m.group("weekday"):
            return self._weekday(m, low, now)
        if m.group("ordinal"):
            return _day_of_month(int(m.group("dom")), today)
        phrase = m.group().replace(" de ", " ")
        if m.group("indays"):
            amount = re.search(r"\d+|a\s+couple|one|two|three|a\b", phrase)
            word = amount.group().split()[-1] if amount else "1"
            count = int(word) if word.isdigit() else _NUMBERS.get(word, 1)
            phrase = f"in {count} {'weeks' if 'week' in phrase else 'days'}"
        parsed = self._dateparse(phrase, now)
        return parsed.astimezone(self.zone).date() if parsed else None

    def _weekday(self, m: re.Match[str], low: str, now: datetime) -> date | None:
        word, prefix = m.group("wd"), (m.group("prefix") or "").split()
        after = low[m.end() : m.end() + 12]
        if (
            word in ("sat", "sun")
            and not prefix
            and not re.match(r"\s*(?:\d|at|morn|aft|eve)", after)
        ):
            return None  # "the water sat there": only a day with on/this/next or a time
        index = _WEEKDAYS[word]
        if _NEXT_WEEK.search(low):
            return now.date() + timedelta(days=7 - now.weekday() + index)
        english = " ".join(
            {"próximo": "next", "proximo": "next", "este": "this"}.get(w, w)
            for w in prefix
            if w not in ("on", "el")
        )
        parsed = self._dateparse(f"{english} {_DAY_NAMES[index]}".strip(), now)
        return parsed.astimezone(self.zone).date() if parsed else None

    def _clock(self, low: str, part_start: time | None) -> _Clock | None:
        for kind, rx in _CLOCKS:
            for m in rx.finditer(low):
                clock = self._clock_of(kind, m, part_start)
                if clock is not None:
                    return clock
        return None

    def _clock_of(self, kind: str, m: re.Match[str], part_start: time | None) -> _Clock | None:
        bare = kind == "at" and not re.match(r"[@~]|at|around|a\s|sobre|hacia", m.group())
        if bare and not (m.group("aap") or m.group("am") or m.group("anoon")):
            return None  # a number alone is a slot choice, not a time
        if kind == "range" and not (
            m.group("prep") or m.group("aap") or m.group("bap") or m.group("am")
        ):
            return None
        start = _clock_time(m, "a", part_start)
        if start is None:
            return None
        end = None
        if kind == "range":
            end = _clock_time(m, "b", part_start, after=start)
            if end is None or end <= start:
                return None
        return _Clock(kind, start, end, m.span())

    def _hours(self, part: _Part | None, clock: _Clock | None) -> tuple[time | None, time | None]:
        """Start and end times of day; None for the day's opening, closing or bounds."""
        if clock is None:
            return (part[1], part[2]) if part else (None, None)
        if clock.kind == "range":
            return clock.start, clock.end
        if clock.kind == "after":
            return clock.start, part[2] if part and part[2] > clock.start else None
        if clock.kind == "before":
            return (part[1] if part and part[1] < clock.start else None), clock.start
        moment = datetime.combine(date.min, clock.start) + self.slot
        return clock.start, moment.time() if moment.date() == date.min else time(23, 59)

    def _on(self, day: date, hours: tuple[time | None, time | None]) -> tuple[datetime, datetime]:
        opening = self.config.hours.week[day.weekday()]
        start, end = hours
        if start is None:
            start = opening[0][0] if opening and end and opening[0][0] < end else time(0)
        if end is None:
            closes = opening[-1][1] if opening else None
            if closes is not None and closes > start:
                return datetime.combine(day, start, self.zone), datetime.combine(
                    day, closes, self.zone
                )
            return datetime.combine(day, start, self.zone), self._midnight(day, 1)
        return datetime.combine(day, start, self.zone), datetime.combine(day, end, self.zone)

    # -- checking what the model proposed --------------------------------------------------

    def validate(self, proposed: dict[str, object], text: str, now: datetime) -> Extracted:
        """Keep only the model's values that check out; drop the rest, never raise."""
        return _safe(lambda: self._validate(proposed, text, now), Extracted())

    def _validate(self, proposed: dict[str, object], text: str, now: datetime) -> Extracted:
        def value(key: str) -> str | None:
            raw = proposed.get(key)
            return " ".join(raw.split())[:200] if isinstance(raw, str) and raw.strip() else None

        text = _clean(text)
        service = value("service")
        area, address, name, when = value("area"), value("address"), value("name"), value("time")
        place, postcode, elsewhere = self._checked_area(area, text)
        kept_address, address_elsewhere = self._checked_address(address, text)
        return Extracted(
            service=self.catalogue.name_for(service) if service else None,
            urgency=_checked_urgency(value("urgency")),
            place=place,
            postcode=postcode,
            address=kept_address,
            out_of_area=elsewhere or address_elsewhere,
            name=self._checked_name(name, text) if name else None,
            time=self.parse_time(when, now) if when else None,
        )

    def _checked_area(
        self, area: str | None, text: str
    ) -> tuple[str | None, str | None, str | None]:
        """(place, postcode, out_of_area) from a proposed area that the text supports."""
        if area is None:
            return None, None, None
        place = self._place(area)
        if place and self._place(text) == place:
            return place, None, None
        for code, _ in self._postcodes(area, []):
            if _postcode_key(code) in _postcode_key(text):
                return (None, code, None) if self._in_area(code) else (None, None, code)
        elsewhere = self._elsewhere(area)
        if elsewhere and elsewhere in text:
            return None, None, elsewhere
        return None, None, None

    def _checked_address(self, address: str | None, text: str) -> tuple[str | None, str | None]:
        """A proposed address is kept when the customer wrote it; one with a postcode
        outside the area is out of area instead."""
        if address is None:
            return None, None
        if " ".join(address.lower().split()) not in " ".join(_lower(text).split()):
            return None, None
        codes = [c for c, _ in self._postcodes(address, [s for _, s in self._addresses(address)])]
        if codes and not self._in_area(codes[0]):
            return None, codes[0]
        if self._place(address) or codes or self._addresses(address):
            return address, None
        return None, None

    def _checked_name(self, name: str, text: str) -> str | None:
        words = name.split()
        if not 1 <= len(words) <= 3 or not all(re.fullmatch(_NAME_WORD, w) for w in words):
            return None
        low = _lower(text)
        if not all(_phrase(w, inflect=False).search(low) for w in words):
            return None
        if any(w.lower() in _NOT_NAMES or w.lower() in _WEEKDAYS for w in words):
            return None
        if self._place(name) or self.catalogue.hits(name):
            return None
        return " ".join(w if w[0].isupper() else w.capitalize() for w in words)


def _checked_urgency(value: str | None) -> Urgency | None:
    """The model may make a job urgent, never an emergency: that alerts the owner at once
    and is left to the configured keywords and catalogue."""
    try:
        urgency = Urgency((value or "").strip().lower())
    except ValueError:
        return None
    return Urgency.URGENT if urgency is Urgency.EMERGENCY else urgency


def _union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _postcode_key(code: str) -> str:
    return "".join(code.split()).upper()


def _day_of_month(number: int, today: date) -> date | None:
    """The next date with this day of the month (dateparser reads "the 12th" as December)."""
    for months in range(3):
        year, month = divmod(today.month - 1 + months, 12)
        try:
            candidate = date(today.year + year, month + 1, number)
        except ValueError:
            continue
        if candidate >= today:
            return candidate
    return None


def _clock_time(
    m: re.Match[str], p: str, part_start: time | None, after: time | None = None
) -> time | None:
    if m.group(f"{p}noon"):
        return time(12)
    hour, minute = int(m.group(f"{p}h")), int(m.group(f"{p}m") or 0)
    ampm = (m.group(f"{p}ap") or "").replace(".", "")
    if minute > 59:
        return None
    if ampm:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm.startswith("p") else 0)
    elif hour > 23:
        return None
    elif hour <= 12:
        hour = _guess_hour(hour, part_start, after)
    return time(hour, minute)


def _guess_hour(hour: int, part_start: time | None, after: time | None) -> int:
    """A bare hour: 1-6 is afternoon, 7-11 morning, unless the part of day or the range's
    start says otherwise ("evening at 7", "between 11 and 1")."""
    if part_start is not None and part_start >= time(12) and hour < 12:
        return hour + 12
    if after is not None and hour < 12 and time(hour) <= after:
        return hour + 12
    return hour + 12 if 1 <= hour <= 6 else hour
