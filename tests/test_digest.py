"""The owner's daily digest: due at its hour, counted over the day before, sent once per
owner number and day whatever restarts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcatch import booking
from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.config import Config, load
from callcatch.owner import DailyDigest
from callcatch.store import AsyncStore, Store
from callcatch.store import texts as q
from tests.daemon import write_config

OWNERS = '["+12125550188", "+12125550189"]'
# Thursday 3 December 2026, 18:05 in New York.
DUE = datetime(2026, 12, 3, 23, 5, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = write_config(tmp_path, owner__numbers=OWNERS, owner__daily_digest='"18:00"')
    return load(path)


@pytest.fixture
async def store(config: Config) -> AsyncIterator[AsyncStore]:
    async_store = AsyncStore(Store(config.store.path, "US"))
    yield async_store
    async_store.close()


def missed(linkedid: str, ended: datetime) -> CallRecord:
    return CallRecord(
        linkedid=linkedid, caller="+12125550147", caller_name="", did="5550101",
        forwarded_from=None, line="PJSIP/carrier", started_at=ended - timedelta(seconds=20),
        ended_at=ended, outcome=Outcome.NO_ANSWER, detected_by=Detection.AMI, signal="test",
    )  # fmt: skip


async def digests(store: AsyncStore) -> list[dict[str, object]]:
    rows = await store.call(q.outbox)
    return [r for r in rows if r["kind"] == q.OWNER and str(r["linkedid"]).startswith("digest")]


def test_the_example_has_no_digest_and_the_time_parses(tmp_path: Path, config: Config) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert load(write_config(plain)).owner.daily_digest is None
    assert config.owner.daily_digest == time(18, 0)


async def test_not_due_before_its_hour(config: Config, store: AsyncStore) -> None:
    digest = DailyDigest(config, store, asyncio.Event())
    assert not await digest.send_if_due(DUE - timedelta(minutes=10))
    assert await digests(store) == []


async def test_the_day_in_one_text_per_owner_once(config: Config, store: AsyncStore) -> None:
    db = store.store
    # In the window (after 18:00 yesterday): two missed calls and a booking for tomorrow.
    db.record_call(missed("in-1", DUE - timedelta(hours=3)))
    db.record_call(missed("in-2", DUE - timedelta(hours=20)))
    db.record_call(missed("before", DUE - timedelta(hours=26)))  # the day before: not counted
    zone = ZoneInfo(config.business.timezone)
    slots = booking.Availability(config).slots(DUE)
    friday = next(s for s in slots if s.label(zone).startswith("Fri 4 Dec"))
    booking.book(
        db, "+12125550147", friday, "Blocked drain or toilet", "Joe", "8 Grand St", None,
        DUE - timedelta(hours=1),
    )  # fmt: skip
    wakeup = asyncio.Event()
    digest = DailyDigest(config, store, wakeup)
    assert await digest.send_if_due(DUE)
    assert wakeup.is_set()
    sent = await digests(store)
    assert sorted(str(r["number"]) for r in sent) == ["+12125550188", "+12125550189"]
    body = str(sent[0]["body"])
    assert body.startswith("callcatch, Thu 3 Dec: 2 missed calls, 0 texted back,")
    assert "1 booked, 0 cancelled, 0 opted out." in body
    assert "Tomorrow: 1 visit:\n08:00 Joe, Blocked drain or toilet, 8 Grand St" in body
    # Later that evening, and after a restart: nothing more.
    assert not await digest.send_if_due(DUE + timedelta(hours=2))
    again = DailyDigest(config, store, asyncio.Event())
    assert not await again.send_if_due(DUE + timedelta(hours=3))
    assert len(await digests(store)) == 2
    # The next day's digest is a new one.
    assert await again.send_if_due(DUE + timedelta(days=1))
    assert len(await digests(store)) == 4


async def test_no_digest_when_not_configured(tmp_path: Path, config: Config) -> None:
    plain = replace(config, owner=replace(config.owner, daily_digest=None))
    async_store = AsyncStore(Store(tmp_path / "plain.db", "US"))
    try:
        assert not await DailyDigest(plain, async_store, asyncio.Event()).send_if_due(DUE)
    finally:
        async_store.close()
