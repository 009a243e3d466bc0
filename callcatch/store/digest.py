"""What the owner's daily digest counts: one window of the shop's day, read in one go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from callcatch.store import Store, as_dicts, iso


@dataclass(frozen=True)
class Day:
    missed: int
    texted: int
    conversations: int
    booked: int
    cancelled: int
    opted_out: int
    visits_next: list[dict[str, Any]]


def day(store: Store, since: datetime, until: datetime, visits: tuple[datetime, datetime]) -> Day:
    """Counts for [since, until), and the booked visits that start within ``visits``."""
    window = [iso(since), iso(until)]

    def count(sql: str) -> int:
        return int(store.db.execute(sql, window).fetchone()[0])

    booked = as_dicts(
        store.db.execute(
            "SELECT name, service, address, starts_at FROM bookings WHERE state = 'booked' "
            "AND starts_at >= ? AND starts_at < ? ORDER BY starts_at",
            [iso(visits[0]), iso(visits[1])],
        )
    )
    return Day(
        missed=count(
            "SELECT COUNT(*) FROM calls WHERE missed = 1 AND ended_at >= ? AND ended_at < ?"
        ),
        texted=count(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'textback' "
            "AND state IN ('sent', 'delivered') AND created_at >= ? AND created_at < ?"
        ),
        conversations=count(
            "SELECT COUNT(*) FROM conversations WHERE created_at >= ? AND created_at < ?"
        ),
        booked=count(
            "SELECT COUNT(*) FROM bookings WHERE state = 'booked' "
            "AND created_at >= ? AND created_at < ?"
        ),
        cancelled=count(
            "SELECT COUNT(*) FROM bookings WHERE state = 'cancelled' "
            "AND updated_at >= ? AND updated_at < ?"
        ),
        opted_out=count(
            "SELECT COUNT(*) FROM opt_outs WHERE opted_out_at >= ? AND opted_out_at < ?"
        ),
        visits_next=booked,
    )
