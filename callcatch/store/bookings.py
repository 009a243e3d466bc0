"""Queries behind bookings: a visit slot is taken in one ``BEGIN IMMEDIATE`` transaction.

SQLite lets one writer at a time hold the write lock that ``BEGIN IMMEDIATE`` takes, so a
count of the bookings overlapping a slot followed by the insert cannot interleave with
another process doing the same: a slot is never booked beyond its capacity. Times are
``iso()`` strings in UTC, which sort and compare as text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callcatch.store import Store, as_dicts, iso

BOOKED, CANCELLED = "booked", "cancelled"


@dataclass(frozen=True)
class Booking:
    id: int
    number: str
    name: str
    service: str
    address: str
    starts_at: datetime
    ends_at: datetime
    state: str
    conversation_id: int | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Booking:
        return cls(
            id=row["id"],
            number=row["number"],
            name=row["name"],
            service=row["service"],
            address=row["address"],
            starts_at=datetime.fromisoformat(row["starts_at"]),
            ends_at=datetime.fromisoformat(row["ends_at"]),
            state=row["state"],
            conversation_id=row["conversation_id"],
        )


@contextmanager
def _immediate(store: Store) -> Iterator[None]:
    """One write transaction that holds the database's write lock from its start."""
    store.db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        store.db.execute("ROLLBACK")
        raise
    store.db.execute("COMMIT")


def overlapping(
    store: Store, starts_at: datetime, ends_at: datetime, exclude: int | None = None
) -> int:
    """How many booked visits overlap ``[starts_at, ends_at)``."""
    row = store.db.execute(
        "SELECT COUNT(*) FROM bookings WHERE state = ? AND starts_at < ? AND ends_at > ? "
        "AND id IS NOT ?",
        [BOOKED, iso(ends_at), iso(starts_at), exclude],
    ).fetchone()
    return int(row[0])


def booked_between(store: Store, start: datetime, end: datetime) -> list[tuple[str, str]]:
    """(starts_at, ends_at) of the booked visits that overlap ``[start, end)``."""
    cursor = store.db.execute(
        "SELECT starts_at, ends_at FROM bookings WHERE state = ? AND starts_at < ? "
        "AND ends_at > ? ORDER BY starts_at",
        [BOOKED, iso(end), iso(start)],
    )
    return [(str(a), str(b)) for a, b in cursor]


def insert(
    store: Store,
    *,
    number: str,
    starts_at: datetime,
    ends_at: datetime,
    service: str,
    name: str,
    address: str,
    conversation_id: int | None,
    now: datetime,
    capacity: int,
) -> Booking | None:
    """Book the visit if fewer than ``capacity`` visits overlap it; None when it is full."""
    with _immediate(store):
        if overlapping(store, starts_at, ends_at) >= capacity:
            return None
        cursor = store.db.execute(
            "INSERT INTO bookings (number, name, service, address, starts_at, ends_at, state, "
            "created_at, updated_at, conversation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                number,
                name,
                service,
                address,
                iso(starts_at),
                iso(ends_at),
                BOOKED,
                iso(now),
                iso(now),
                conversation_id,
            ],
        )
        booking_id = cursor.lastrowid
    found = get(store, int(booking_id or 0))
    return Booking.from_row(found) if found else None


def move(
    store: Store,
    booking_id: int,
    starts_at: datetime,
    ends_at: datetime,
    now: datetime,
    capacity: int,
) -> Booking | None:
    """Move a booked visit to a new time if that time has room; else change nothing."""
    with _immediate(store):
        current = get(store, booking_id)
        if current is None or current["state"] != BOOKED:
            return None
        if overlapping(store, starts_at, ends_at, exclude=booking_id) >= capacity:
            return None
        store.db.execute(
            "UPDATE bookings SET starts_at = ?, ends_at = ?, updated_at = ? WHERE id = ?",
            [iso(starts_at), iso(ends_at), iso(now), booking_id],
        )
    found = get(store, booking_id)
    return Booking.from_row(found) if found else None


def cancel(store: Store, booking_id: int, now: datetime) -> bool:
    """Cancel a booked visit; False when there was none to cancel."""
    cursor = store.db.execute(
        "UPDATE bookings SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
        [CANCELLED, iso(now), booking_id, BOOKED],
    )
    return cursor.rowcount == 1


def get(store: Store, booking_id: int) -> dict[str, Any] | None:
    rows = as_dicts(store.db.execute("SELECT * FROM bookings WHERE id = ?", [booking_id]))
    return rows[0] if rows else None


def bookings(store: Store, since: datetime | None = None) -> list[dict[str, Any]]:
    """Every booking (cancelled too), soonest first; ``since``: those ending after it."""
    if since is None:
        cursor = store.db.execute("SELECT * FROM bookings ORDER BY starts_at, id")
    else:
        cursor = store.db.execute(
            "SELECT * FROM bookings WHERE ends_at > ? ORDER BY starts_at, id", [iso(since)]
        )
    return as_dicts(cursor)


def booking_for(store: Store, number: str, now: datetime | None = None) -> dict[str, Any] | None:
    """The number's booked visit (the soonest one not over by ``now``, if given)."""
    sql = "SELECT * FROM bookings WHERE number = ? AND state = ?"
    params: list[Any] = [number, BOOKED]
    if now is not None:
        sql += " AND ends_at > ?"
        params.append(iso(now))
    rows = as_dicts(store.db.execute(sql + " ORDER BY starts_at, id LIMIT 1", params))
    return rows[0] if rows else None
