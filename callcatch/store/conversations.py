"""Queries behind the booking conversation: one open conversation per number, its slots,
what was offered, who holds it (the assistant or the owner)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from callcatch.store import Store, as_dicts, iso

OPEN, OFFERED, BOOKED, OUT_OF_SCOPE, CLOSED = "open", "offered", "booked", "out-of-scope", "closed"
ACTIVE = (OPEN, OFFERED, BOOKED, OUT_OF_SCOPE)


@dataclass
class Conversation:
    id: int
    number: str
    state: str
    slots: dict[str, Any] = field(default_factory=dict)
    offered: list[str] = field(default_factory=list)
    booking_id: int | None = None
    owner_holds: bool = False
    alerted: bool = False
    asked: list[str] = field(default_factory=list)
    # Slot labels this turn may state (offered, booked, released); not stored.
    said: list[str] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Conversation:
        return cls(
            id=row["id"],
            number=row["number"],
            state=row["state"],
            slots=json.loads(row["slots"]),
            offered=json.loads(row["offered"]),
            booking_id=row["booking_id"],
            owner_holds=bool(row["owner_holds"]),
            alerted=bool(row["alerted"]),
            asked=json.loads(row["asked"]),
        )


def current(store: Store, number: str) -> Conversation | None:
    rows = as_dicts(
        store.db.execute(
            "SELECT * FROM conversations WHERE number = ? AND state != ? ORDER BY id DESC LIMIT 1",
            [number, CLOSED],
        )
    )
    return Conversation.from_row(rows[0]) if rows else None


def open_for(
    store: Store, number: str, now: datetime, linkedid: str | None = None
) -> Conversation:
    """The number's active conversation, or a new one."""
    found = current(store, number)
    if found is not None:
        return found
    cursor = store.db.execute(
        "INSERT INTO conversations (number, state, slots, offered, asked, linkedid, created_at, "
        "updated_at) VALUES (?, ?, '{}', '[]', '[]', ?, ?, ?)",
        [number, OPEN, linkedid, iso(now), iso(now)],
    )
    assert cursor.lastrowid is not None
    return Conversation(id=cursor.lastrowid, number=number, state=OPEN)


def save(store: Store, conversation: Conversation, now: datetime, inbound: bool = False) -> None:
    store.db.execute(
        "UPDATE conversations SET state = ?, slots = ?, offered = ?, booking_id = ?, "
        "owner_holds = ?, alerted = ?, asked = ?, updated_at = ?"
        + (", last_inbound_at = ?, summary_sent_at = NULL" if inbound else "")
        + " WHERE id = ?",
        [
            conversation.state,
            json.dumps(conversation.slots, sort_keys=True),
            json.dumps(conversation.offered),
            conversation.booking_id,
            int(conversation.owner_holds),
            int(conversation.alerted),
            json.dumps(conversation.asked),
            iso(now),
            *([iso(now)] if inbound else []),
            conversation.id,
        ],
    )


def stalled(store: Store, now: datetime, minutes: float) -> list[dict[str, Any]]:
    """Conversations the caller went quiet in, before a booking, not summarised yet."""
    cursor = store.db.execute(
        "SELECT * FROM conversations WHERE state IN (?, ?) AND last_inbound_at IS NOT NULL "
        "AND last_inbound_at < ? AND summary_sent_at IS NULL AND owner_holds = 0",
        [OPEN, OFFERED, iso(now - timedelta(minutes=minutes))],
    )
    return as_dicts(cursor)


def mark_summarised(store: Store, conversation_id: int, now: datetime) -> None:
    store.db.execute(
        "UPDATE conversations SET summary_sent_at = ? WHERE id = ?", [iso(now), conversation_id]
    )


def hold(store: Store, number: str, owner: bool, now: datetime) -> bool:
    """The owner takes the conversation over (or gives it back); False when none is active."""
    conversation = current(store, number)
    if conversation is None:
        if not owner:
            return False
        conversation = open_for(store, number, now)
    conversation.owner_holds = owner
    save(store, conversation, now)
    return True


def listing(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    cursor = store.db.execute("SELECT * FROM conversations ORDER BY id DESC LIMIT ?", [limit])
    rows = as_dicts(cursor)
    for row in rows:
        row["slots"] = json.loads(row["slots"])
        row["offered"] = json.loads(row["offered"])
        row["asked"] = json.loads(row["asked"])
        row["owner_holds"] = bool(row["owner_holds"])
        row["alerted"] = bool(row["alerted"])
    return rows
