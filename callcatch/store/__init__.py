"""The store: SQLite in WAL mode, the single source of truth.

A call is a committed row before anything acts on it. :class:`Store` is synchronous and
owned by one thread; :class:`AsyncStore` gives the event loop the same operations on a
dedicated thread, so a slow disk never stalls the AMI or ARI readers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlite_utils

from callcatch.calls import CallRecord
from callcatch.numbers import classify
from callcatch.store.migrations import MIGRATIONS

P = ParamSpec("P")
T = TypeVar("T")


class StoreError(Exception):
    """The database cannot be opened or migrated."""


def as_dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """A query's rows as dicts keyed by column name."""
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class Store:
    def __init__(self, path: Path, country: str) -> None:
        self.path = path
        self.country = country
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA busy_timeout = 10000")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc
        try:
            self.migrate()
        except (sqlite3.Error, StoreError) as exc:
            self.db.conn.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot migrate the store {path}: {exc}") from exc

    @property
    def version(self) -> int:
        row = self.db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> None:
        current = self.version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the store {self.path} is at schema {current}, newer than this callcatch "
                f"({len(MIGRATIONS)}); upgrade callcatch"
            )
        for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.db.conn:
                self.db.execute("BEGIN IMMEDIATE")
                migration(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    def record_call(self, call: CallRecord) -> bool:
        """Commit ``call`` unless its linkedid is already recorded; True when it was new."""
        caller = classify(call.caller, self.country)
        cursor = self.db.execute(
            """
            INSERT INTO calls (linkedid, caller_raw, caller_e164, caller_status, caller_reason,
                caller_name, did, forwarded_from, line, started_at, ended_at, outcome, missed,
                detected_by, signal, recorded_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (linkedid) DO NOTHING
            """,
            [
                call.linkedid,
                caller.raw,
                caller.e164,
                caller.status.value,
                caller.reason,
                call.caller_name,
                call.did,
                call.forwarded_from,
                call.line,
                iso(call.started_at),
                iso(call.ended_at),
                call.outcome.value,
                int(call.missed),
                call.detected_by.value,
                call.signal,
                iso(datetime.now(UTC)),
            ],
        )
        return cursor.rowcount == 1

    def known_linkedids(self, linkedids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(linkedids), 500):
            chunk = linkedids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT linkedid FROM calls WHERE linkedid IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def calls(
        self, since: datetime | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded calls, newest first."""
        where, params = "", []
        if since is not None:
            where, params = "WHERE c.started_at >= ?", [iso(since)]
        sql = (
            "SELECT c.*, o.state AS textback_state, o.reason AS textback_failure FROM calls c "
            "LEFT JOIN outbox o ON o.linkedid = c.linkedid AND o.kind = 'textback' "
            f"{where} ORDER BY c.started_at DESC, c.id DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return as_dicts(self.db.execute(sql, params))

    def close(self) -> None:
        self.db.conn.close()


class AsyncStore:
    """The store's operations for the event loop, run one at a time on their own thread."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def call(
        self, fn: Callable[Concatenate[Store, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(store, ...)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.store, *args, **kwargs))

    async def record_call(self, call: CallRecord) -> bool:
        return await self.run(self.store.record_call, call)

    async def known_linkedids(self, linkedids: list[str]) -> set[str]:
        return await self.run(self.store.known_linkedids, linkedids)

    def close(self) -> None:
        """Finish queued writes, then close the database."""
        self._executor.shutdown(wait=True)
        self.store.close()
