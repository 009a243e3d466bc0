"""Versioned schema changes, applied in order at start; ``PRAGMA user_version`` holds the
number of the last one applied. A migration is never edited once released: add the next."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _calls(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            linkedid TEXT NOT NULL UNIQUE,
            caller_raw TEXT NOT NULL,
            caller_e164 TEXT,
            caller_status TEXT NOT NULL,
            caller_reason TEXT NOT NULL DEFAULT '',
            caller_name TEXT NOT NULL DEFAULT '',
            did TEXT,
            forwarded_from TEXT,
            line TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT NOT NULL,
            outcome TEXT NOT NULL,
            missed INTEGER NOT NULL,
            detected_by TEXT NOT NULL,
            signal TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX calls_started_at ON calls (started_at)")
    db.execute("CREATE INDEX calls_caller_e164 ON calls (caller_e164)")


def _texts(db: sqlite_utils.Database) -> None:
    """The outbox, what came in, opt-outs, delivery reports, modems, owner notices."""
    db.execute("ALTER TABLE calls ADD COLUMN textback TEXT")
    db.execute("ALTER TABLE calls ADD COLUMN textback_reason TEXT")
    db.execute(
        """
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            linkedid TEXT,
            number TEXT NOT NULL,
            body TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            not_before TEXT NOT NULL,
            expires_at TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            modem TEXT,
            refs TEXT NOT NULL DEFAULT '[]',
            parts INTEGER NOT NULL DEFAULT 0,
            delivered_parts INTEGER NOT NULL DEFAULT 0,
            sent_at TEXT,
            delivered_at TEXT,
            reason TEXT NOT NULL DEFAULT ''
        )
        """
    )
    # One text-back per missed call, ever: the database refuses a second.
    db.execute(
        "CREATE UNIQUE INDEX outbox_one_textback ON outbox (linkedid) WHERE kind = 'textback'"
    )
    db.execute("CREATE INDEX outbox_due ON outbox (state, not_before)")
    db.execute("CREATE INDEX outbox_number ON outbox (number, created_at)")
    db.execute(
        """
        CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            sender TEXT NOT NULL,
            sender_e164 TEXT,
            body TEXT NOT NULL,
            binary INTEGER NOT NULL DEFAULT 0,
            parts INTEGER NOT NULL,
            sent_at TEXT,
            received_at TEXT NOT NULL,
            modem TEXT NOT NULL,
            dedupe TEXT NOT NULL UNIQUE,
            handled TEXT
        )
        """
    )
    db.execute("CREATE INDEX inbox_sender ON inbox (sender_e164, received_at)")
    db.execute(
        """
        CREATE TABLE inbox_parts (
            id INTEGER PRIMARY KEY,
            sender TEXT NOT NULL,
            reference INTEGER NOT NULL,
            total INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            body TEXT NOT NULL,
            sent_at TEXT,
            received_at TEXT NOT NULL,
            modem TEXT NOT NULL,
            UNIQUE (sender, reference, total, seq)
        )
        """
    )
    db.execute(
        """
        CREATE TABLE opt_outs (
            number TEXT PRIMARY KEY,
            keyword TEXT NOT NULL,
            opted_out_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE mutes (
            number TEXT PRIMARY KEY,
            until TEXT NOT NULL,
            reason TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE delivery_reports (
            id INTEGER PRIMARY KEY,
            modem TEXT NOT NULL,
            reference INTEGER NOT NULL,
            recipient TEXT NOT NULL,
            status INTEGER NOT NULL,
            delivered INTEGER NOT NULL,
            final INTEGER NOT NULL,
            outbox_id INTEGER,
            received_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE modems (
            name TEXT PRIMARY KEY,
            imei TEXT,
            imsi TEXT,
            signal INTEGER,
            registration TEXT,
            operator TEXT,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE owner_notices (
            id INTEGER PRIMARY KEY,
            linkedid TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            sent_in INTEGER
        )
        """
    )


def _callbacks(db: sqlite_utils.Database) -> None:
    """Answered calls from the shop out to a number: a delayed text-back to it is moot."""
    db.execute(
        """
        CREATE TABLE callbacks (
            linkedid TEXT NOT NULL,
            number TEXT NOT NULL,
            answered_at TEXT NOT NULL,
            PRIMARY KEY (linkedid, number)
        )
        """
    )
    db.execute("CREATE INDEX callbacks_number ON callbacks (number, answered_at)")


def _bookings(db: sqlite_utils.Database) -> None:
    """Visits booked from a conversation; a cancelled one keeps its row."""
    db.execute(
        """
        CREATE TABLE bookings (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            service TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            starts_at TEXT NOT NULL,
            ends_at TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('booked', 'cancelled')),
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            conversation_id INTEGER,
            notes TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX bookings_starts_at ON bookings (starts_at)")
    db.execute("CREATE INDEX bookings_number ON bookings (number, state)")


def _conversations(db: sqlite_utils.Database) -> None:
    """One booking conversation per caller at a time: state, slots, what was offered."""
    db.execute(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            number TEXT NOT NULL,
            linkedid TEXT,
            state TEXT NOT NULL,
            slots TEXT NOT NULL DEFAULT '{}',
            offered TEXT NOT NULL DEFAULT '[]',
            asked TEXT NOT NULL DEFAULT '[]',
            booking_id INTEGER,
            owner_holds INTEGER NOT NULL DEFAULT 0,
            alerted INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_inbound_at TEXT,
            summary_sent_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX conversations_number ON conversations (number, state)")


def _digests(db: sqlite_utils.Database) -> None:
    """At most one daily digest per owner number and day, whatever restarts: the digest's
    outbox row carries the day as its key."""
    db.execute(
        "CREATE UNIQUE INDEX outbox_one_digest ON outbox (number, linkedid) "
        "WHERE kind = 'owner' AND linkedid IS NOT NULL"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _calls,
    _texts,
    _callbacks,
    _bookings,
    _conversations,
    _digests,
]
