"""Visit slots and bookings: what is free, taking a slot, moving or cancelling a visit.

Slots of ``[booking] slot_minutes`` are laid from the start of each opening range of
``[hours]`` (a range too short for another whole slot leaves its tail unused), on the days
that are not holidays, from an hour after now for ``days_ahead`` days. A slot is free while
fewer than ``jobs_per_slot`` booked visits overlap it. Taking one is a single transaction
that re-counts first (:mod:`callcatch.store.bookings`), so two conversations, even in two
processes, can never book the same slot beyond its capacity.

Every function that reads or writes takes the store first, so the event loop can run it
on the store's thread: ``await store.call(booking.book, number, slot, ...)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from callcatch.config import Config
from callcatch.conversation.slots import TimeWish
from callcatch.store import Store
from callcatch.store import bookings as q
from callcatch.store.bookings import Booking

__all__ = [
    "Availability",
    "Booking",
    "Slot",
    "book",
    "booking_by_id",
    "booking_for",
    "bookings",
    "cancel",
    "free_slots",
    "reschedule",
    "slot_at",
    "to_ics",
]

LEAD_TIME = timedelta(minutes=60)


@dataclass(frozen=True, order=True)
class Slot:
    """One visit slot, UTC; ``capacity`` is how many jobs it takes (``jobs_per_slot``)."""

    starts_at: datetime
    ends_at: datetime
    capacity: int = 1

    def label(self, zone: ZoneInfo | str) -> str:
        """How a text names it: "Tue 8 Dec 14:00-16:00" in the shop's time zone."""
        tz = ZoneInfo(zone) if isinstance(zone, str) else zone
        start, end = self.starts_at.astimezone(tz), self.ends_at.astimezone(tz)
        return f"{start:%a} {start.day} {start:%b} {start:%H:%M}-{end:%H:%M}"


class Availability:
    """The shop's visit slots, from its configuration, against the bookings in a store."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.zone = ZoneInfo(config.business.timezone)
        self.length = timedelta(minutes=config.booking.slot_minutes)
        self.capacity = config.booking.jobs_per_slot

    def slots(self, now: datetime) -> list[Slot]:
        """Every slot from ``now`` plus the lead time to ``days_ahead`` days on, free or not."""
        first, horizon = now + LEAD_TIME, now + timedelta(days=self.config.booking.days_ahead)
        day, last = now.astimezone(self.zone).date(), horizon.astimezone(self.zone).date()
        found: list[Slot] = []
        while day <= last:
            found += [s for s in self._day(day) if first <= s.starts_at < horizon]
            day += timedelta(days=1)
        return found

    def _day(self, day: date) -> list[Slot]:
        if day in self.config.hours.holidays:
            return []
        found = []
        for opens, closes in self.config.hours.week[day.weekday()]:
            start, close = datetime.combine(day, opens), datetime.combine(day, closes)
            while start + self.length <= close:
                found.append(self._slot(start, start + self.length))
                start += self.length
        return found

    def _slot(self, start: datetime, end: datetime) -> Slot:
        """A slot from local wall-clock times."""
        return Slot(
            start.replace(tzinfo=self.zone).astimezone(UTC),
            end.replace(tzinfo=self.zone).astimezone(UTC),
            self.capacity,
        )

    def slot_at(self, starts_at: datetime) -> Slot:
        """The slot starting at ``starts_at`` (as offered earlier)."""
        start = starts_at.astimezone(UTC)
        return Slot(start, start + self.length, self.capacity)

    def free_slots(
        self, store: Store, now: datetime, wish: TimeWish | None = None, limit: int | None = None
    ) -> list[Slot]:
        """Up to ``limit`` (default ``offer``) free slots, soonest first: those starting in
        the wish's window, then the nearest after it; if the window has none on either
        side (it is past the horizon), the nearest before it. No wish: the soonest."""
        limit = self.config.booking.offer if limit is None else limit
        free = self._free(store, now)
        if wish is None:
            return free[:limit]
        inside = [s for s in free if wish.earliest <= s.starts_at < wish.latest]
        after = [s for s in free if s.starts_at >= wish.latest]
        chosen = (inside + after)[:limit]
        if not chosen:
            chosen = sorted(free, key=lambda s: wish.earliest - s.starts_at)[:limit]
        return sorted(chosen)

    def _free(self, store: Store, now: datetime) -> list[Slot]:
        candidates = self.slots(now)
        if not candidates:
            return []
        taken = [
            (datetime.fromisoformat(a), datetime.fromisoformat(b))
            for a, b in q.booked_between(store, candidates[0].starts_at, candidates[-1].ends_at)
        ]
        return [s for s in candidates if _overlaps(s, taken) < s.capacity]

    def book(
        self,
        store: Store,
        number: str,
        slot: Slot,
        service: str,
        name: str,
        address: str,
        conversation_id: int | None,
        now: datetime,
    ) -> Booking | None:
        """:func:`book` with this shop's capacity per slot."""
        slot = Slot(slot.starts_at, slot.ends_at, self.capacity)
        return book(store, number, slot, service, name, address, conversation_id, now)

    def reschedule(
        self, store: Store, booking_id: int, slot: Slot, now: datetime
    ) -> Booking | None:
        """:func:`reschedule` with this shop's capacity per slot."""
        slot = Slot(slot.starts_at, slot.ends_at, self.capacity)
        return reschedule(store, booking_id, slot, now)


def _overlaps(slot: Slot, taken: list[tuple[datetime, datetime]]) -> int:
    return sum(1 for a, b in taken if a < slot.ends_at and b > slot.starts_at)


def free_slots(
    store: Store,
    config: Config,
    now: datetime,
    wish: TimeWish | None = None,
    limit: int | None = None,
) -> list[Slot]:
    """:meth:`Availability.free_slots` for ``config``."""
    return Availability(config).free_slots(store, now, wish, limit)


def slot_at(config: Config, starts_at: datetime) -> Slot:
    """The slot of ``config`` that starts at ``starts_at``."""
    return Availability(config).slot_at(starts_at)


def book(
    store: Store,
    number: str,
    slot: Slot,
    service: str,
    name: str,
    address: str,
    conversation_id: int | None,
    now: datetime,
) -> Booking | None:
    """Book ``slot`` in one transaction; None when it has started or was taken meanwhile."""
    if slot.starts_at <= now:
        return None
    return q.insert(
        store,
        number=number,
        starts_at=slot.starts_at,
        ends_at=slot.ends_at,
        service=service,
        name=name,
        address=address,
        conversation_id=conversation_id,
        now=now,
        capacity=slot.capacity,
    )


def reschedule(store: Store, booking_id: int, slot: Slot, now: datetime) -> Booking | None:
    """Move a booked visit to ``slot`` in one transaction: the old time is freed and the
    new one taken, or (slot full or started, booking not active) nothing changes: None."""
    if slot.starts_at <= now:
        return None
    return q.move(store, booking_id, slot.starts_at, slot.ends_at, now, slot.capacity)


def cancel(store: Store, booking_id: int, now: datetime) -> bool:
    """Cancel a booked visit; False when it was not booked."""
    return q.cancel(store, booking_id, now)


def bookings(store: Store, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every booking, cancelled ones too, soonest first; ``since``: those ending after it."""
    return q.bookings(store, since)


def booking_for(store: Store, number: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The number's active booking: booked, and not over by ``now`` when given."""
    return q.booking_for(store, number, now)


def booking_by_id(store: Store, booking_id: int) -> dict[str, Any] | None:
    """One booking by id, whatever its state."""
    return q.get(store, booking_id)


def to_ics(
    rows: Iterable[Mapping[str, Any] | Booking], business_name: str, zone: ZoneInfo | str
) -> str:
    """An iCalendar (RFC 5545) calendar with one event per booked (not cancelled) visit."""
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//callcatch//bookings//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", f"{business_name} bookings")
    calendar.add("x-wr-timezone", zone if isinstance(zone, str) else zone.key)
    for row in rows:
        values = _values(row)
        if values["state"] == q.BOOKED:
            calendar.add_component(_event(values))
    data: bytes = calendar.to_ical()
    return data.decode("utf-8")


def _values(row: Mapping[str, Any] | Booking) -> dict[str, Any]:
    if isinstance(row, Booking):
        return {**vars(row), "updated_at": row.starts_at}
    return dict(row)


def _event(values: dict[str, Any]) -> icalendar.Event:
    def moment(value: Any) -> datetime:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return parsed.astimezone(UTC)

    event = icalendar.Event()
    event.add("uid", f"booking-{values['id']}@callcatch")
    event.add("dtstamp", moment(values.get("updated_at") or values["starts_at"]))
    event.add("dtstart", moment(values["starts_at"]))
    event.add("dtend", moment(values["ends_at"]))
    service, name = values.get("service") or "Visit", values.get("name") or ""
    event.add("summary", f"{service} - {name}" if name else service)
    if values.get("address"):
        event.add("location", values["address"])
    event.add("description", f"Caller: {values['number']}")
    event.add("status", "CONFIRMED")
    return event
