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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_calls]
