"""Visit slots from the opening hours, capacity, wish windows, bookings that can never be
double-booked, cancel and reschedule, and the iCalendar export.

Hours and booking settings are pinned here (as the example has them): Monday-Friday
08:00-17:00, Saturday 09:00-12:00, Sunday closed, holidays 2026-12-25 and 2027-01-01;
120-minute slots, one job per slot, 14 days ahead, three offered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from callcatch import booking
from callcatch.booking import Availability, Slot
from callcatch.config import BookingConfig, Config, HoursConfig, load
from callcatch.conversation.slots import TimeWish
from callcatch.store import Store
from tests.daemon import write_config

NY = ZoneInfo("America/New_York")
NOW = datetime(2026, 12, 8, 10, 30, tzinfo=NY)  # a Tuesday
CALLER = "+12125550123"


def local(day: int, hour: int, month: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=NY)


def labels(slots: list[Slot]) -> list[str]:
    return [s.label(NY) for s in slots]


WEEKDAY = ((time(8), time(17)),)
HOURS = HoursConfig(
    week=(WEEKDAY, WEEKDAY, WEEKDAY, WEEKDAY, WEEKDAY, ((time(9), time(12)),), ()),
    holidays=frozenset({date(2026, 12, 25), date(2027, 1, 1)}),
)


def pinned(tmp_path: Path, **booking: int) -> Config:
    config = load(write_config(tmp_path))
    settings = BookingConfig(slot_minutes=120, jobs_per_slot=1, days_ahead=14, offer=3)
    return replace(config, hours=HOURS, booking=replace(settings, **booking))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return pinned(tmp_path)


@pytest.fixture
def store(config: Config) -> Iterator[Store]:
    store = Store(config.store.path, "US")
    yield store
    store.close()


def take(store: Store, slot: Slot, number: str = CALLER) -> booking.Booking | None:
    return booking.book(store, number, slot, "Leak or burst pipe", "Dana", "12 Elm St", 7, NOW)


# -- slots ----------------------------------------------------------------------------------


def test_slots_follow_the_hours_and_the_lead_time(config: Config) -> None:
    slots = Availability(config).slots(NOW)
    assert labels(slots[:7]) == [
        "Tue 8 Dec 12:00-14:00",  # 10:00 starts within the hour's lead time
        "Tue 8 Dec 14:00-16:00",  # 16:00-18:00 would run past closing
        "Wed 9 Dec 08:00-10:00",
        "Wed 9 Dec 10:00-12:00",
        "Wed 9 Dec 12:00-14:00",
        "Wed 9 Dec 14:00-16:00",
        "Thu 10 Dec 08:00-10:00",
    ]
    saturday = [s for s in slots if s.starts_at.astimezone(NY).weekday() == 5]
    assert labels(saturday) == ["Sat 12 Dec 09:00-11:00", "Sat 19 Dec 09:00-11:00"]
    assert not [s for s in slots if s.starts_at.astimezone(NY).weekday() == 6]
    assert all(
        s.starts_at.tzinfo is UTC and s.ends_at - s.starts_at == timedelta(hours=2) for s in slots
    )


def test_lead_time_edges(config: Config) -> None:
    availability = Availability(config)
    assert (
        availability.slots(local(8, 10).replace(minute=59))[0].label(NY) == "Tue 8 Dec 12:00-14:00"
    )
    assert (
        availability.slots(local(8, 11).replace(minute=1))[0].label(NY) == "Tue 8 Dec 14:00-16:00"
    )


def test_days_ahead_is_the_horizon(config: Config) -> None:
    slots = Availability(config).slots(NOW)
    assert slots[-1].label(NY) == "Tue 22 Dec 10:00-12:00"
    assert all(s.starts_at < NOW + timedelta(days=14) for s in slots)


def test_holidays_have_no_slots(config: Config) -> None:
    slots = Availability(config).slots(local(24, 7))
    days = {s.starts_at.astimezone(NY).date().isoformat() for s in slots}
    assert "2026-12-24" in days and "2026-12-26" in days
    assert "2026-12-25" not in days and "2027-01-01" not in days


def test_hours_with_a_lunch_break_and_short_days(tmp_path: Path) -> None:
    config = pinned(tmp_path, slot_minutes=90)
    lunch_break = ((time(8), time(12)), (time(13), time(17)))
    config = replace(config, hours=replace(HOURS, week=(lunch_break, *HOURS.week[1:])))
    monday = [s for s in Availability(config).slots(NOW) if s.label(NY).startswith("Mon 14")]
    assert labels(monday) == [
        "Mon 14 Dec 08:00-09:30",
        "Mon 14 Dec 09:30-11:00",
        "Mon 14 Dec 13:00-14:30",
        "Mon 14 Dec 14:30-16:00",
    ]


def test_slots_keep_local_hours_across_daylight_saving(config: Config) -> None:
    # New York moves to daylight time on Sunday 14 March 2027
    slots = Availability(config).slots(datetime(2027, 3, 12, 7, tzinfo=NY))
    friday, monday = slots[0], next(s for s in slots if s.label(NY).startswith("Mon"))
    assert friday.starts_at.hour == 13 and monday.starts_at.hour == 12  # 08:00 EST / EDT
    assert monday.label(NY) == "Mon 15 Mar 08:00-10:00"


# -- free slots and wishes ----------------------------------------------------------------


def wish(start: datetime, end: datetime, asap: bool = False) -> TimeWish:
    return TimeWish(start.astimezone(UTC), end.astimezone(UTC), asap, "test")


def test_free_slots_without_a_wish_are_the_soonest(config: Config, store: Store) -> None:
    free = booking.free_slots(store, config, NOW)
    assert labels(free) == [
        "Tue 8 Dec 12:00-14:00",
        "Tue 8 Dec 14:00-16:00",
        "Wed 9 Dec 08:00-10:00",
    ]
    assert labels(booking.free_slots(store, config, NOW, None, 1)) == ["Tue 8 Dec 12:00-14:00"]


def test_wish_window_then_the_nearest_after(config: Config, store: Store) -> None:
    friday_morning = wish(local(11, 8), local(11, 12))
    assert labels(booking.free_slots(store, config, NOW, friday_morning)) == [
        "Fri 11 Dec 08:00-10:00",
        "Fri 11 Dec 10:00-12:00",
        "Fri 11 Dec 12:00-14:00",
    ]
    first = booking.free_slots(store, config, NOW, friday_morning, 1)[0]
    assert take(store, first) is not None
    assert labels(booking.free_slots(store, config, NOW, friday_morning, 2)) == [
        "Fri 11 Dec 10:00-12:00",
        "Fri 11 Dec 12:00-14:00",
    ]


def test_wish_with_no_slot_inside_gets_the_next_ones(config: Config, store: Store) -> None:
    sunday = wish(local(13, 0), local(14, 0))
    assert labels(booking.free_slots(store, config, NOW, sunday, 2)) == [
        "Mon 14 Dec 08:00-10:00",
        "Mon 14 Dec 10:00-12:00",
    ]
    evening = wish(local(9, 17), local(9, 20))
    assert booking.free_slots(store, config, NOW, evening, 1)[0].label(NY) == (
        "Thu 10 Dec 08:00-10:00"
    )


def test_wish_past_the_horizon_gets_the_nearest_before(config: Config, store: Store) -> None:
    far = wish(local(5, 8, month=1, year=2027), local(5, 12, month=1, year=2027))
    assert labels(booking.free_slots(store, config, NOW, far, 2)) == [
        "Tue 22 Dec 08:00-10:00",
        "Tue 22 Dec 10:00-12:00",
    ]


def test_asap_is_the_earliest(config: Config, store: Store) -> None:
    asap = wish(NOW, local(10, 0), asap=True)
    assert booking.free_slots(store, config, NOW, asap, 1)[0].label(NY) == "Tue 8 Dec 12:00-14:00"


def test_capacity_per_slot(tmp_path: Path) -> None:
    config = pinned(tmp_path, jobs_per_slot=2)
    store = Store(config.store.path, "US")
    try:
        slot = booking.free_slots(store, config, NOW, None, 1)[0]
        assert slot.capacity == 2
        assert take(store, slot, "+12125550001") is not None
        assert booking.free_slots(store, config, NOW, None, 1) == [slot]  # one place left
        assert take(store, slot, "+12125550002") is not None
        assert take(store, slot, "+12125550003") is None
        assert slot not in booking.free_slots(store, config, NOW, None, 10)
        assert (
            Availability(config).book(store, "+12125550004", slot, "Leak", "", "", None, NOW)
            is None
        )
    finally:
        store.close()


def test_a_booking_overlapping_two_slots_takes_both(config: Config, store: Store) -> None:
    odd = Slot(local(9, 9).astimezone(UTC), local(9, 11).astimezone(UTC))
    assert take(store, odd) is not None
    free = labels(booking.free_slots(store, config, NOW, wish(local(9, 8), local(9, 17)), 5))
    assert "Wed 9 Dec 08:00-10:00" not in free and "Wed 9 Dec 10:00-12:00" not in free
    assert free[0] == "Wed 9 Dec 12:00-14:00"


# -- booking ------------------------------------------------------------------------------


def test_book_records_everything(config: Config, store: Store) -> None:
    slot = booking.slot_at(config, local(9, 10))
    made = take(store, slot)
    assert made is not None
    assert (made.number, made.name, made.service, made.address) == (
        CALLER,
        "Dana",
        "Leak or burst pipe",
        "12 Elm St",
    )
    assert (made.starts_at, made.ends_at) == (slot.starts_at, slot.ends_at)
    assert made.state == "booked" and made.conversation_id == 7
    row = booking.booking_by_id(store, made.id)
    assert row is not None and row["starts_at"] == "2026-12-09T15:00:00.000+00:00"
    assert booking.booking_for(store, CALLER) == row
    assert take(store, slot, "+12125550999") is None


def test_a_slot_that_has_started_cannot_be_booked(config: Config, store: Store) -> None:
    assert take(store, booking.slot_at(config, local(8, 10))) is None


def test_no_double_booking_under_concurrency(config: Config) -> None:
    """Eight connections (as eight processes would have) race for each of four slots."""
    first = Store(config.store.path, "US")
    slots = booking.free_slots(first, config, NOW, None, 4)
    first.close()
    winners: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)
    lock = threading.Lock()

    def racer(index: int) -> None:
        mine = Store(config.store.path, "US")
        try:
            for slot_index, slot in enumerate(slots):
                barrier.wait()
                if take(mine, slot, f"+1212555{index:04d}") is not None:
                    with lock:
                        winners.append((slot_index, index))
        finally:
            mine.close()

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(w[0] for w in winners) == [0, 1, 2, 3]
    check = Store(config.store.path, "US")
    try:
        assert len(booking.bookings(check)) == 4
    finally:
        check.close()


def test_cancel_frees_the_slot(config: Config, store: Store) -> None:
    slot = booking.free_slots(store, config, NOW, None, 1)[0]
    made = take(store, slot)
    assert made is not None
    assert slot not in booking.free_slots(store, config, NOW, None, 3)
    assert booking.cancel(store, made.id, NOW) is True
    assert booking.cancel(store, made.id, NOW) is False
    assert booking.free_slots(store, config, NOW, None, 1) == [slot]
    assert booking.booking_for(store, CALLER) is None
    row = booking.booking_by_id(store, made.id)
    assert row is not None and row["state"] == "cancelled"


def test_reschedule_moves_or_changes_nothing(config: Config, store: Store) -> None:
    first, second, third = booking.free_slots(store, config, NOW, None, 3)
    made = take(store, first)
    other = take(store, third, "+12125550999")
    assert made is not None and other is not None
    moved = booking.reschedule(store, made.id, second, NOW)
    assert moved is not None and moved.id == made.id and moved.starts_at == second.starts_at
    assert first in booking.free_slots(store, config, NOW, None, 3)
    assert booking.reschedule(store, made.id, third, NOW) is None  # taken by the other
    row = booking.booking_by_id(store, made.id)
    assert row is not None and datetime.fromisoformat(row["starts_at"]) == second.starts_at
    assert booking.reschedule(store, made.id, second, NOW) is not None  # onto itself
    assert booking.reschedule(store, made.id, booking.slot_at(config, local(8, 8)), NOW) is None
    booking.cancel(store, made.id, NOW)
    assert booking.reschedule(store, made.id, first, NOW) is None


def test_bookings_and_booking_for(config: Config, store: Store) -> None:
    a, b = booking.free_slots(store, config, NOW, None, 2)
    take(store, b)
    old = take(store, a)
    assert old is not None
    assert [r["starts_at"] for r in booking.bookings(store)] == sorted(
        r["starts_at"] for r in booking.bookings(store)
    )
    assert len(booking.bookings(store, since=a.ends_at)) == 1
    assert booking.booking_for(store, CALLER)["id"] == old.id  # type: ignore[index]
    assert booking.booking_for(store, CALLER, now=a.ends_at)["starts_at"] == (  # type: ignore[index]
        "2026-12-08T19:00:00.000+00:00"
    )
    assert booking.booking_for(store, "+19999999999") is None


# -- iCalendar ------------------------------------------------------------------------------


def test_ics_has_one_event_per_active_booking(config: Config, store: Store) -> None:
    a, b, c = booking.free_slots(store, config, NOW, None, 3)
    kept = take(store, a)
    gone = take(store, b)
    assert kept is not None and gone is not None
    anonymous = booking.book(store, "+12125550777", c, "", "", "", None, NOW)
    assert anonymous is not None
    booking.cancel(store, gone.id, NOW)
    text = booking.to_ics(booking.bookings(store), "Example Plumbing", NY)
    assert text == booking.to_ics(booking.bookings(store), "Example Plumbing", NY)
    calendar = icalendar.Calendar.from_ical(text)
    events = list(calendar.walk("VEVENT"))
    assert [str(e["UID"]) for e in events] == [
        f"booking-{kept.id}@callcatch",
        f"booking-{anonymous.id}@callcatch",
    ]
    first = events[0]
    assert first.decoded("DTSTART") == a.starts_at and first.decoded("DTEND") == a.ends_at
    assert "DTSTART:20261208T170000Z" in text.replace("\r\n", "\n")
    assert str(first["SUMMARY"]) == "Leak or burst pipe - Dana"
    assert str(first["LOCATION"]) == "12 Elm St"
    assert CALLER in str(first["DESCRIPTION"])
    assert str(events[1]["SUMMARY"]) == "Visit" and "LOCATION" not in events[1]
    assert str(calendar["VERSION"]) == "2.0" and "PRODID" in calendar


def test_ics_from_booking_objects_and_empty(store: Store) -> None:
    assert "BEGIN:VEVENT" not in booking.to_ics([], "Example Plumbing", "America/New_York")
    slot = Slot(local(9, 8).astimezone(UTC), local(9, 10).astimezone(UTC))
    made = take(store, slot)
    assert made is not None
    calendar = icalendar.Calendar.from_ical(booking.to_ics([made], "Example Plumbing", NY))
    assert len(list(calendar.walk("VEVENT"))) == 1
