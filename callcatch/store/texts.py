"""Queries behind the text-back: the outbox, what came in, opt-outs and limits.

Each function takes the :class:`~callcatch.store.Store` first so that the event loop can run
it on the store's thread with ``AsyncStore.call(fn, ...)``. Every state change of a text is
one committed statement; a text is a committed ``queued`` row before any AT command is sent
for it, and ``sending`` is committed just before AT+CMGS is written.

Outbox states: ``queued`` -> ``sending`` -> ``sent`` -> ``delivered``; or ``failed`` with a
reason (permanent error, retries used up, expired, cancelled by policy). A temporary failure
puts the text back to ``queued`` with a later ``not_before``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from callcatch.store import Store, as_dicts, iso

TEXTBACK = "textback"
KEYWORD = "keyword"
OWNER = "owner"
TEST = "test"
REPLY = "reply"

QUEUED, SENDING, SENT, DELIVERED, FAILED = "queued", "sending", "sent", "delivered", "failed"


@dataclass(frozen=True)
class Text:
    id: int
    kind: str
    linkedid: str | None
    number: str
    body: str
    attempts: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Text:
        return cls(
            id=row["id"],
            kind=row["kind"],
            linkedid=row["linkedid"],
            number=row["number"],
            body=row["body"],
            attempts=row["attempts"],
            created_at=datetime.fromisoformat(row["created_at"]),
        )


# -- calls -------------------------------------------------------------------------------


def set_textback(store: Store, linkedid: str, state: str, reason: str = "") -> None:
    store.db.execute(
        "UPDATE calls SET textback = ?, textback_reason = ? WHERE linkedid = ?",
        [state, reason, linkedid],
    )


def call(store: Store, linkedid: str) -> dict[str, Any] | None:
    rows = as_dicts(store.db.execute("SELECT * FROM calls WHERE linkedid = ?", [linkedid]))
    return rows[0] if rows else None


def undecided_missed_calls(store: Store, since: datetime) -> list[dict[str, Any]]:
    """Missed calls with no text-back decision yet (a crash came between the two)."""
    cursor = store.db.execute(
        "SELECT * FROM calls WHERE missed = 1 AND textback IS NULL AND ended_at >= ? "
        "ORDER BY ended_at",
        [iso(since)],
    )
    return as_dicts(cursor)


def answered_since(store: Store, number: str, since: datetime) -> str | None:
    """Did the caller ring again and get answered, or did the shop call them back and get
    an answer, after ``since``? Says which, or None."""
    rang_again = store.db.execute(
        "SELECT 1 FROM calls WHERE caller_e164 = ? AND missed = 0 AND started_at > ? LIMIT 1",
        [number, iso(since)],
    ).fetchone()
    if rang_again:
        return "they called again and were answered"
    called_back = store.db.execute(
        "SELECT 1 FROM callbacks WHERE number = ? AND answered_at > ? LIMIT 1",
        [number, iso(since)],
    ).fetchone()
    return "the shop called them back and they answered" if called_back else None


def add_callback(store: Store, linkedid: str, number: str, answered_at: datetime) -> None:
    store.db.execute(
        "INSERT INTO callbacks (linkedid, number, answered_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [linkedid, number, iso(answered_at)],
    )


# -- facts for the policy ----------------------------------------------------------------


@dataclass(frozen=True)
class NumberFacts:
    opted_out: bool
    muted: bool
    last_textback: datetime | None
    last_inbound: datetime | None
    texts_last_day: int
    ever_texted: bool


def facts(store: Store, number: str, now: datetime) -> NumberFacts:
    db = store.db
    day_ago = iso(now - timedelta(days=1))
    opted_out = db.execute("SELECT 1 FROM opt_outs WHERE number = ?", [number]).fetchone()
    muted = db.execute(
        "SELECT 1 FROM mutes WHERE number = ? AND until > ?", [number, iso(now)]
    ).fetchone()
    last_textback = db.execute(
        "SELECT MAX(created_at) FROM outbox WHERE number = ? AND kind = ? "
        "AND NOT (state = 'failed' AND reason LIKE 'cancelled%')",
        [number, TEXTBACK],
    ).fetchone()[0]
    last_inbound = db.execute(
        "SELECT MAX(received_at) FROM inbox WHERE sender_e164 = ?", [number]
    ).fetchone()[0]
    texts_last_day = db.execute(
        "SELECT COUNT(*) FROM outbox WHERE number = ? AND kind IN (?, ?) AND created_at > ? "
        "AND state != 'failed'",
        [number, TEXTBACK, KEYWORD, day_ago],
    ).fetchone()[0]
    ever = db.execute(
        "SELECT 1 FROM outbox WHERE number = ? AND state IN ('sending', 'sent', 'delivered') "
        "LIMIT 1",
        [number],
    ).fetchone()
    return NumberFacts(
        opted_out=opted_out is not None,
        muted=muted is not None,
        last_textback=_when(last_textback),
        last_inbound=_when(last_inbound),
        texts_last_day=int(texts_last_day),
        ever_texted=ever is not None,
    )


def textbacks_last_hour(store: Store, now: datetime) -> int:
    row = store.db.execute(
        "SELECT COUNT(*) FROM outbox WHERE kind = ? AND created_at > ? AND state != 'failed'",
        [TEXTBACK, iso(now - timedelta(hours=1))],
    ).fetchone()
    return int(row[0])


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


# -- the outbox --------------------------------------------------------------------------


def queue(
    store: Store,
    *,
    kind: str,
    number: str,
    body: str,
    now: datetime,
    expires_at: datetime,
    not_before: datetime | None = None,
    linkedid: str | None = None,
) -> int | None:
    """Commit a text to send; None when this call already has its text-back."""
    cursor = store.db.execute(
        "INSERT INTO outbox (kind, linkedid, number, body, state, not_before, expires_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [
            kind,
            linkedid,
            number,
            body,
            QUEUED,
            iso(not_before or now),
            iso(expires_at),
            iso(now),
            iso(now),
        ],
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None


def expire(store: Store, now: datetime) -> list[int]:
    """Fail every queued text past its expiry: a late "sorry we missed you" is worse than none."""
    cursor = store.db.execute(
        "UPDATE outbox SET state = 'failed', reason = 'expired before it could be sent', "
        "updated_at = ? WHERE state = 'queued' AND expires_at <= ? RETURNING id",
        [iso(now), iso(now)],
    )
    return [row[0] for row in cursor.fetchall()]


def claim(store: Store, modem: str, now: datetime) -> Text | None:
    """Take the oldest due text for ``modem``: it becomes ``sending`` in the same statement,
    so two modems never take the same text."""
    cursor = store.db.execute(
        "UPDATE outbox SET state = 'sending', modem = ?, attempts = attempts + 1, updated_at = ? "
        "WHERE id = (SELECT id FROM outbox WHERE state = 'queued' AND not_before <= ? "
        "AND expires_at > ? ORDER BY not_before, id LIMIT 1) RETURNING *",
        [modem, iso(now), iso(now), iso(now)],
    )
    rows = as_dicts(cursor)
    return Text.from_row(rows[0]) if rows else None


def next_due(store: Store) -> datetime | None:
    row = store.db.execute("SELECT MIN(not_before) FROM outbox WHERE state = 'queued'").fetchone()
    return _when(row[0])


def mark_sent(store: Store, text_id: int, refs: list[int], now: datetime) -> None:
    store.db.execute(
        "UPDATE outbox SET state = 'sent', refs = ?, parts = ?, sent_at = ?, updated_at = ? "
        "WHERE id = ?",
        [json.dumps(refs), len(refs), iso(now), iso(now), text_id],
    )


def mark_failed(store: Store, text_id: int, reason: str, now: datetime) -> None:
    store.db.execute(
        "UPDATE outbox SET state = 'failed', reason = ?, updated_at = ? WHERE id = ?",
        [reason, iso(now), text_id],
    )


def requeue(store: Store, text_id: int, reason: str, not_before: datetime, now: datetime) -> None:
    store.db.execute(
        "UPDATE outbox SET state = 'queued', reason = ?, not_before = ?, updated_at = ? "
        "WHERE id = ?",
        [reason, iso(not_before), iso(now), text_id],
    )


def fail_interrupted(store: Store, modem: str, now: datetime) -> list[int]:
    """Texts left ``sending`` by a crash: AT+CMGS may have gone out, so they are never sent
    again (at most once); each is failed with that reason for the owner to see."""
    cursor = store.db.execute(
        "UPDATE outbox SET state = 'failed', reason = 'interrupted while sending; not resent "
        "to avoid a duplicate', updated_at = ? WHERE state = 'sending' AND modem = ? RETURNING id",
        [iso(now), modem],
    )
    return [row[0] for row in cursor.fetchall()]


def cancel_queued_for(store: Store, number: str, reason: str, now: datetime) -> int:
    cursor = store.db.execute(
        "UPDATE outbox SET state = 'failed', reason = ?, updated_at = ? "
        "WHERE number = ? AND state = 'queued' AND kind != ?",
        [f"cancelled: {reason}", iso(now), number, KEYWORD],
    )
    return cursor.rowcount


def record_report(
    store: Store,
    *,
    modem: str,
    reference: int,
    recipient: str,
    status: int,
    delivered: bool,
    final: bool,
    now: datetime,
) -> int | None:
    """Store a delivery report and apply it to the text it reports on (the newest sent text
    from ``modem`` whose message references include ``reference``)."""
    db = store.db
    candidates = db.execute(
        "SELECT id, refs FROM outbox WHERE modem = ? AND state IN ('sent', 'delivered') "
        "AND sent_at > ? ORDER BY id DESC",
        [modem, iso(now - timedelta(days=3))],
    ).fetchall()
    outbox_id = next((i for i, refs in candidates if reference in json.loads(refs)), None)
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO delivery_reports (modem, reference, recipient, status, delivered, final, "
            "outbox_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [modem, reference, recipient, status, int(delivered), int(final), outbox_id, iso(now)],
        )
        if outbox_id is not None and delivered:
            db.execute(
                "UPDATE outbox SET delivered_parts = delivered_parts + 1, updated_at = ? "
                "WHERE id = ?",
                [iso(now), outbox_id],
            )
            db.execute(
                "UPDATE outbox SET state = 'delivered', delivered_at = ? "
                "WHERE id = ? AND delivered_parts >= parts",
                [iso(now), outbox_id],
            )
        elif outbox_id is not None and final:
            db.execute(
                "UPDATE outbox SET reason = ?, updated_at = ? WHERE id = ?",
                [f"network reports not delivered (status {status})", iso(now), outbox_id],
            )
    return outbox_id


def outbox(store: Store, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    cursor = store.db.execute(
        f"SELECT * FROM outbox {where} ORDER BY id DESC LIMIT ?", [*params, limit]
    )
    return as_dicts(cursor)


def text(store: Store, text_id: int) -> dict[str, Any] | None:
    rows = as_dicts(store.db.execute("SELECT * FROM outbox WHERE id = ?", [text_id]))
    return rows[0] if rows else None


# -- what came in ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    id: int
    sender: str
    sender_e164: str | None
    body: str
    binary: bool


def dedupe_key(sender: str, sent_at: datetime | None, body: str) -> str:
    """The network may deliver one message twice: same sender, SMSC time and text."""
    stamp = sent_at.isoformat() if sent_at else ""
    return hashlib.sha256(f"{sender}\x00{stamp}\x00{body}".encode()).hexdigest()


def add_inbound(
    store: Store,
    *,
    sender: str,
    sender_e164: str | None,
    body: str,
    binary: bool,
    parts: int,
    sent_at: datetime | None,
    modem: str,
    now: datetime,
) -> Inbound | None:
    """Commit a whole message; None when it is a duplicate delivery."""
    cursor = store.db.execute(
        "INSERT INTO inbox (sender, sender_e164, body, binary, parts, sent_at, received_at, "
        "modem, dedupe) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe) DO NOTHING",
        [
            sender,
            sender_e164,
            body,
            int(binary),
            parts,
            iso(sent_at) if sent_at else None,
            iso(now),
            modem,
            dedupe_key(sender, sent_at, body),
        ],
    )
    if cursor.rowcount != 1 or cursor.lastrowid is None:
        return None
    return Inbound(cursor.lastrowid, sender, sender_e164, body, binary)


def add_part(
    store: Store,
    *,
    sender: str,
    reference: int,
    total: int,
    seq: int,
    body: str,
    sent_at: datetime | None,
    modem: str,
    now: datetime,
) -> list[dict[str, Any]] | None:
    """Commit one part of a concatenated message; when it completes the set, return all the
    parts in order and remove them (the caller commits the joined message)."""
    db = store.db
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO inbox_parts (sender, reference, total, seq, body, sent_at, received_at, "
            "modem) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                sender,
                reference,
                total,
                seq,
                body,
                iso(sent_at) if sent_at else None,
                iso(now),
                modem,
            ],
        )
        parts = as_dicts(
            db.execute(
                "SELECT * FROM inbox_parts WHERE sender = ? AND reference = ? AND total = ? "
                "ORDER BY seq",
                [sender, reference, total],
            )
        )
        if len(parts) < total:
            return None
        db.execute(
            "DELETE FROM inbox_parts WHERE sender = ? AND reference = ? AND total = ?",
            [sender, reference, total],
        )
    return parts


def stale_parts(store: Store, older_than: datetime) -> list[dict[str, Any]]:
    """Parts whose siblings never came: kept as they are, handed over as partial text."""
    db = store.db
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        parts = as_dicts(
            db.execute(
                "SELECT * FROM inbox_parts WHERE received_at < ? ORDER BY sender, reference, seq",
                [iso(older_than)],
            )
        )
        db.execute("DELETE FROM inbox_parts WHERE received_at < ?", [iso(older_than)])
    return parts


def mark_handled(store: Store, inbound_id: int, how: str) -> None:
    store.db.execute("UPDATE inbox SET handled = ? WHERE id = ?", [how, inbound_id])


def unhandled_inbound(store: Store) -> list[Inbound]:
    rows = as_dicts(store.db.execute("SELECT * FROM inbox WHERE handled IS NULL ORDER BY id"))
    return [
        Inbound(r["id"], r["sender"], r["sender_e164"], r["body"], bool(r["binary"])) for r in rows
    ]


def inbound_last_minute(store: Store, number: str, now: datetime) -> int:
    row = store.db.execute(
        "SELECT COUNT(*) FROM inbox WHERE sender_e164 = ? AND received_at > ?",
        [number, iso(now - timedelta(minutes=1))],
    ).fetchone()
    return int(row[0])


def opt_out(store: Store, number: str, keyword: str, now: datetime) -> bool:
    cursor = store.db.execute(
        "INSERT INTO opt_outs (number, keyword, opted_out_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        [number, keyword, iso(now)],
    )
    return cursor.rowcount == 1


def opt_in(store: Store, number: str) -> bool:
    cursor = store.db.execute("DELETE FROM opt_outs WHERE number = ?", [number])
    return cursor.rowcount == 1


def mute(store: Store, number: str, until: datetime, reason: str) -> None:
    store.db.execute(
        "INSERT INTO mutes (number, until, reason) VALUES (?, ?, ?) "
        "ON CONFLICT (number) DO UPDATE SET until = excluded.until, reason = excluded.reason",
        [number, iso(until), reason],
    )


# -- modems and the owner ----------------------------------------------------------------


def save_modem(store: Store, /, name: str, now: datetime, **values: Any) -> None:
    columns = ", ".join(values)
    marks = ", ".join("?" * len(values))
    updates = ", ".join(f"{c} = excluded.{c}" for c in values)
    store.db.execute(
        f"INSERT INTO modems (name, updated_at, {columns}) VALUES (?, ?, {marks}) "
        f"ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at, {updates}",
        [name, iso(now), *values.values()],
    )


def add_owner_notice(store: Store, linkedid: str, now: datetime) -> None:
    store.db.execute(
        "INSERT INTO owner_notices (linkedid, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        [linkedid, iso(now)],
    )


def pending_owner_notices(store: Store) -> list[dict[str, Any]]:
    cursor = store.db.execute(
        "SELECT n.id AS notice_id, n.created_at AS noticed_at, c.* FROM owner_notices n "
        "JOIN calls c ON c.linkedid = n.linkedid WHERE n.sent_in IS NULL ORDER BY n.id"
    )
    return as_dicts(cursor)


def queue_owner_summary(
    store: Store,
    notice_ids: list[int],
    numbers: list[str],
    body: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """One text per owner number for a batch of notices, in one transaction."""
    db = store.db
    with db.conn:
        db.execute("BEGIN IMMEDIATE")
        first = None
        for number in numbers:
            cursor = db.execute(
                "INSERT INTO outbox (kind, number, body, state, not_before, expires_at, "
                "created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
                [OWNER, number, body, iso(now), iso(expires_at), iso(now), iso(now)],
            )
            first = first or cursor.lastrowid
        marks = ",".join("?" * len(notice_ids))
        db.execute(
            f"UPDATE owner_notices SET sent_in = ? WHERE id IN ({marks})",
            [first or 0, *notice_ids],
        )


def now_utc() -> datetime:
    return datetime.now(UTC)
