"""What a modem hands the inbox: every PDU is committed (or kept raw), nothing crashes,
multipart messages are joined, duplicates dropped, delivery reports applied."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callcatch.config import Config, load
from callcatch.sms import pdu
from callcatch.sms.inbox import Inbox
from callcatch.store import AsyncStore, Store
from callcatch.store import texts as q
from tests.daemon import write_config

SENDER = "+12125550123"
SENT = datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    async_store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    yield async_store
    async_store.close()


@pytest.fixture
def inbox(tmp_path: Path, store: AsyncStore) -> Inbox:
    config: Config = load(write_config(tmp_path))
    return Inbox(config, store, asyncio.Event(), "sim1")


async def received(store: AsyncStore) -> list[dict[str, object]]:
    cursor = store.store.db.execute("SELECT * FROM inbox ORDER BY id")
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor]


async def settle(inbox: Inbox) -> None:
    await inbox.tasks.drain()


async def test_a_text_is_committed_and_handled(inbox: Inbox, store: AsyncStore) -> None:
    (single,) = pdu.encode_deliver(SENDER, "My kitchen pipe burst", sent_at=SENT)
    await inbox.on_sms(single)
    await settle(inbox)
    (row,) = await received(store)
    assert row["body"] == "My kitchen pipe burst"
    assert row["sender_e164"] == SENDER
    assert row["handled"] == "kept for the conversation"


async def test_two_thousand_characters_arrive_whole(inbox: Inbox, store: AsyncStore) -> None:
    text = ("The boiler makes a noise " * 80)[:2000]
    parts = pdu.encode_deliver(SENDER, text, sent_at=SENT, reference=77)
    assert len(parts) > 10
    for part in reversed(parts):
        await inbox.on_sms(part)
    (row,) = await received(store)
    assert row["body"] == text
    assert row["parts"] == len(parts)


async def test_only_emoji_and_ucs2(inbox: Inbox, store: AsyncStore) -> None:
    for text in ("😀🔧🚿💧", "Łukasz: złamana rura"):
        for part in pdu.encode_deliver(SENDER, text, sent_at=SENT + timedelta(seconds=len(text))):
            await inbox.on_sms(part)
    assert [r["body"] for r in await received(store)] == ["😀🔧🚿💧", "Łukasz: złamana rura"]


async def test_duplicate_delivery_is_kept_once(inbox: Inbox, store: AsyncStore) -> None:
    (single,) = pdu.encode_deliver(SENDER, "hello", sent_at=SENT)
    await inbox.on_sms(single)
    await inbox.on_sms(single)
    assert len(await received(store)) == 1


async def test_duplicate_part_does_not_double_the_text(inbox: Inbox, store: AsyncStore) -> None:
    parts = pdu.encode_deliver(SENDER, "x" * 300, sent_at=SENT, reference=9)
    await inbox.on_sms(parts[0])
    await inbox.on_sms(parts[0])
    await inbox.on_sms(parts[1])
    (row,) = await received(store)
    assert row["body"] == "x" * 300


async def test_binary_message_is_kept_marked_binary(inbox: Inbox, store: AsyncStore) -> None:
    (binary,) = pdu.encode_deliver(SENDER, sent_at=SENT, data=b"\x00\x01\xff wap push")
    await inbox.on_sms(binary)
    await settle(inbox)
    (row,) = await received(store)
    assert row["binary"] == 1
    assert row["handled"] == "binary message kept"


@pytest.mark.parametrize(
    "garbage", ["", "zz", "00", "0791", "07911326040000F004", "FF" * 200, "0" * 7]
)
async def test_undecodable_pdu_is_kept_raw(inbox: Inbox, store: AsyncStore, garbage: str) -> None:
    await inbox.on_sms(garbage)
    (row,) = await received(store)
    assert row["binary"] == 1
    assert row["body"] == garbage
    assert str(row["handled"]).startswith("undecodable")


async def test_invalid_utf16_is_kept_with_replacement_characters(
    inbox: Inbox, store: AsyncStore
) -> None:
    (good,) = pdu.encode_deliver(SENDER, "ab", sent_at=SENT)
    # Swap the UCS-2 text "ab" for a lone high surrogate followed by "b".
    (wide,) = pdu.encode_deliver(SENDER, "ąb", sent_at=SENT)
    broken = wide[:-8] + "D800" + "0062"
    assert good != broken
    await inbox.on_sms(broken)
    (row,) = await received(store)
    assert str(row["body"]).endswith("b")
    assert "\ufffd" in str(row["body"])


async def test_parts_whose_siblings_never_come_are_kept(inbox: Inbox, store: AsyncStore) -> None:
    parts = pdu.encode_deliver(SENDER, "y" * 400, sent_at=SENT, reference=3)
    await inbox.on_sms(parts[0])
    assert await received(store) == []
    store.store.db.execute("UPDATE inbox_parts SET received_at = '2000-01-01T00:00:00+00:00'")
    await inbox.collect_stale_parts()
    (row,) = await received(store)
    assert row["body"] == "y" * 153


async def sent_text(store: AsyncStore, linkedid: str, reference: int, now: datetime) -> int:
    """A text-back to SENDER that the modem took with message ``reference``; its id."""
    text_id = await store.call(
        q.queue,
        kind=q.TEXTBACK,
        number=SENDER,
        body="hi",
        now=now,
        expires_at=now + timedelta(minutes=5),
        linkedid=linkedid,
    )
    claimed = await store.call(q.claim, "sim1", now)
    assert claimed is not None and claimed.id == text_id
    await store.call(q.mark_sent, claimed.id, [reference], now)
    return claimed.id


async def test_delivery_report_marks_the_text_delivered(inbox: Inbox, store: AsyncStore) -> None:
    now = datetime.now(UTC)
    text_id = await sent_text(store, "x.1", 42, now)
    report = pdu.encode_status_report(SENDER, 42, 0, sent_at=now, discharged_at=now)
    await inbox.on_status_report(report)
    row = await store.call(q.text, text_id)
    assert row is not None and row["state"] == "delivered"


async def test_undeliverable_report_keeps_the_reason(inbox: Inbox, store: AsyncStore) -> None:
    now = datetime.now(UTC)
    text_id = await sent_text(store, "x.2", 7, now)
    await inbox.on_status_report(
        pdu.encode_status_report(SENDER, 7, 0x41, sent_at=now, discharged_at=now)
    )
    row = await store.call(q.text, text_id)
    assert row is not None and row["state"] == "sent"
    assert "not delivered" in str(row["reason"])
