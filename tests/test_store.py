from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.store import AsyncStore, Store, StoreError
from callcatch.store.migrations import MIGRATIONS

T0 = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)


def call(
    linkedid: str,
    caller: str = "212-555-0123",
    started: datetime = T0,
    outcome: Outcome = Outcome.NO_ANSWER,
    **changes: object,
) -> CallRecord:
    fields: dict[str, object] = {
        "linkedid": linkedid,
        "caller": caller,
        "caller_name": "Jane Roe",
        "did": "5551000",
        "forwarded_from": None,
        "line": "PJSIP/carrier",
        "started_at": started,
        "ended_at": started + timedelta(seconds=20),
        "outcome": outcome,
        "detected_by": Detection.AMI,
        "signal": "inferred",
    }
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(tmp_path / "callcatch.db", "US")
    yield opened
    opened.close()


def test_wal_mode_and_migrations_applied(store: Store) -> None:
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.version == len(MIGRATIONS)
    assert "calls" in store.db.table_names()


def test_reopening_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "callcatch.db"
    first = Store(path, "US")
    first.record_call(call("1700000000.1"))
    first.close()
    again = Store(path, "US")
    try:
        assert again.version == len(MIGRATIONS)
        assert [row["linkedid"] for row in again.calls()] == ["1700000000.1"]
    finally:
        again.close()


def test_creates_missing_parent_folders(tmp_path: Path) -> None:
    opened = Store(tmp_path / "a" / "b" / "callcatch.db", "US")
    opened.close()
    assert (tmp_path / "a" / "b" / "callcatch.db").exists()


def test_store_from_a_newer_callcatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "callcatch.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this callcatch"):
        Store(path, "US")


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "callcatch.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(path, "US")


def test_record_call_is_true_once_per_linkedid(store: Store) -> None:
    assert store.record_call(call("1700000000.1")) is True
    assert store.record_call(call("1700000000.1", outcome=Outcome.BUSY)) is False
    rows = store.calls()
    assert len(rows) == 1
    assert rows[0]["outcome"] == "no-answer"


def test_caller_is_stored_normalised(store: Store) -> None:
    store.record_call(call("1", caller="(212) 555-0123", forwarded_from="+12125550100"))
    row = store.calls()[0]
    assert row["caller_raw"] == "(212) 555-0123"
    assert row["caller_e164"] == "+12125550123"
    assert row["caller_status"] == "callable"
    assert row["caller_reason"] == ""
    assert row["caller_name"] == "Jane Roe"
    assert row["did"] == "5551000"
    assert row["forwarded_from"] == "+12125550100"
    assert row["line"] == "PJSIP/carrier"
    assert row["missed"] == 1
    assert row["detected_by"] == "ami"
    assert row["signal"] == "inferred"
    assert row["started_at"] == "2026-03-02T14:00:00.000+00:00"
    assert row["ended_at"] == "2026-03-02T14:00:20.000+00:00"


@pytest.mark.parametrize(
    ("raw", "status"),
    [("anonymous", "anonymous"), ("", "withheld"), ("<b>x</b>", "invalid"), ("9" * 40, "invalid")],
)
def test_uncallable_callers_are_stored_with_their_reason(
    store: Store, raw: str, status: str
) -> None:
    store.record_call(call("1", caller=raw))
    row = store.calls()[0]
    assert row["caller_raw"] == raw
    assert row["caller_e164"] is None
    assert row["caller_status"] == status
    assert row["caller_reason"]


def test_answered_call_is_not_missed(store: Store) -> None:
    store.record_call(call("1", outcome=Outcome.ANSWERED))
    assert store.calls()[0]["missed"] == 0


def test_times_in_other_zones_are_stored_as_utc(store: Store) -> None:
    store.record_call(call("1", started=T0.astimezone(ZoneInfo("America/New_York"))))
    assert store.calls()[0]["started_at"] == "2026-03-02T14:00:00.000+00:00"


def test_calls_newest_first_with_since_and_limit(store: Store) -> None:
    for minutes in (0, 30, 10, 20):
        store.record_call(call(f"id-{minutes}", started=T0 + timedelta(minutes=minutes)))
    assert [r["linkedid"] for r in store.calls()] == ["id-30", "id-20", "id-10", "id-0"]
    since = store.calls(since=T0 + timedelta(minutes=10))
    assert [r["linkedid"] for r in since] == ["id-30", "id-20", "id-10"]
    assert [r["linkedid"] for r in store.calls(limit=2)] == ["id-30", "id-20"]
    both = store.calls(since=T0 + timedelta(minutes=5), limit=1)
    assert [r["linkedid"] for r in both] == ["id-30"]


def test_known_linkedids(store: Store) -> None:
    store.record_call(call("a"))
    store.record_call(call("b"))
    many = [f"x{i}" for i in range(1200)] + ["b"]
    assert store.known_linkedids(many) == {"b"}
    assert store.known_linkedids([]) == set()


async def test_concurrent_async_writes_give_one_row_per_linkedid(tmp_path: Path) -> None:
    store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    linkedids = ["shared"] * 100 + [f"own-{i}" for i in range(100)]
    try:
        results = await asyncio.gather(*(store.record_call(call(lid)) for lid in linkedids))
        rows = store.store.calls()
    finally:
        store.close()
    assert sum(results) == 101
    assert results.count(True) == 101
    assert len(rows) == 101
    assert sorted(r["linkedid"] for r in rows) == sorted({*linkedids})


async def test_async_store_known_linkedids(tmp_path: Path) -> None:
    store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    try:
        await store.record_call(call("a"))
        assert await store.known_linkedids(["a", "z"]) == {"a"}
    finally:
        store.close()
