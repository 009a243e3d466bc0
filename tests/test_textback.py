"""From a committed missed call to the outbox, keywords, and the owner's summary, on a real
store (no modem: the outbox is what is asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.config import Config, load
from callcatch.owner import OwnerNotifier
from callcatch.recorder import Recorder
from callcatch.sms.inbox import Inbox, keyword_of
from callcatch.store import AsyncStore, Store
from callcatch.store import texts as q
from callcatch.textback import TextBack
from tests.daemon import write_config

CALLER = "+12125550123"
OWNER = "+12125550188"
_ids = iter(range(1, 10_000))


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # Open every day, so the tests do not depend on the clock.
    days = {
        f"hours__{d}": '"00:00-24:00"'
        for d in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    }
    return load(
        write_config(tmp_path, owner__numbers=f'["{OWNER}"]', owner__batch_seconds="0", **days)
    )


@pytest.fixture
async def store(config: Config) -> AsyncIterator[AsyncStore]:
    async_store = AsyncStore(Store(config.store.path, "US"))
    yield async_store
    async_store.close()


def missed(
    caller: str = CALLER,
    outcome: Outcome = Outcome.NO_ANSWER,
    age_s: float = 0,
) -> CallRecord:
    now = datetime.now(UTC) - timedelta(seconds=age_s)
    return CallRecord(
        linkedid=f"test-{next(_ids)}.0",
        caller=caller,
        caller_name="",
        did="5550101",
        forwarded_from=None,
        line="PJSIP/carrier",
        started_at=now - timedelta(seconds=20),
        ended_at=now,
        outcome=outcome,
        detected_by=Detection.AMI,
        signal="inferred",
    )


async def recorded(config: Config, store: AsyncStore, *calls: CallRecord) -> TextBack:
    wakeup = asyncio.Event()
    textback = TextBack(config, store, wakeup)
    recorder = Recorder(store)
    recorder.on_missed.append(textback.on_missed)
    for call in calls:
        await recorder.record(call)
    return textback


async def outbox(store: AsyncStore, kind: str | None = None) -> list[dict[str, object]]:
    rows = await store.call(q.outbox)
    return [r for r in rows if kind is None or r["kind"] == kind]


async def test_a_missed_call_queues_one_text_back(config: Config, store: AsyncStore) -> None:
    call = missed()
    await recorded(config, store, call)
    (text,) = await outbox(store, q.TEXTBACK)
    assert text["number"] == CALLER
    assert text["state"] == "queued"
    assert text["linkedid"] == call.linkedid
    row = await store.call(q.call, call.linkedid)
    assert row is not None and row["textback"] == "queued"


async def test_the_same_call_reported_twice_is_texted_once(
    config: Config, store: AsyncStore
) -> None:
    call = missed()
    textback = await recorded(config, store, call, call)
    await textback.decide(call.linkedid)
    assert len(await outbox(store, q.TEXTBACK)) == 1


async def test_repeat_caller_within_the_window_gets_one_text(
    config: Config, store: AsyncStore
) -> None:
    first, second = missed(), missed()
    await recorded(config, store, first, second)
    assert len(await outbox(store, q.TEXTBACK)) == 1
    row = await store.call(q.call, second.linkedid)
    assert row is not None and row["textback"] == "skipped"
    assert "repeat window" in row["textback_reason"]


async def test_concurrent_calls_from_one_number_still_one_text(
    config: Config, store: AsyncStore
) -> None:
    textback = await recorded(config, store)
    recorder = Recorder(store)
    recorder.on_missed.append(textback.on_missed)
    await asyncio.gather(*(recorder.record(missed()) for _ in range(10)))
    assert len(await outbox(store, q.TEXTBACK)) == 1


async def test_answered_and_withheld_calls_are_not_texted(
    config: Config, store: AsyncStore
) -> None:
    await recorded(config, store, missed(outcome=Outcome.ANSWERED), missed(caller="anonymous"))
    assert await outbox(store, q.TEXTBACK) == []


async def test_a_call_found_too_late_is_not_texted(config: Config, store: AsyncStore) -> None:
    call = missed(age_s=3600)
    await recorded(config, store, call)
    assert await outbox(store, q.TEXTBACK) == []
    row = await store.call(q.call, call.linkedid)
    assert row is not None and "too late" in row["textback_reason"]


async def test_catch_up_decides_calls_a_crash_left_undecided(
    config: Config, store: AsyncStore
) -> None:
    call = missed()
    await Recorder(store).record(call)  # recorded, but nobody acted on it
    textback = TextBack(config, store, asyncio.Event())
    await textback.catch_up()
    assert len(await outbox(store, q.TEXTBACK)) == 1


async def test_owner_gets_one_summary_for_a_batch(config: Config, store: AsyncStore) -> None:
    await recorded(config, store, missed(), missed(caller="+12125550124"), missed("anonymous"))
    notifier = OwnerNotifier(config, store, asyncio.Event())
    assert await notifier.flush()
    (summary,) = await outbox(store, q.OWNER)
    assert summary["number"] == OWNER
    body = str(summary["body"])
    assert body.startswith("3 missed calls:")
    assert "texted back" in body and "not texted: caller id is anonymous" in body
    assert not await notifier.flush()


@pytest.mark.parametrize(
    ("body", "word"),
    [
        ("STOP", "STOP"),
        (" stop. ", "STOP"),
        ("Opt-out!", "OPT OUT"),
        ("Unsubscribe", "UNSUBSCRIBE"),
    ],
)
def test_keywords_ignore_case_spaces_and_punctuation(body: str, word: str) -> None:
    assert keyword_of(body) == word


async def inbound(store: AsyncStore, body: str, sender: str = CALLER) -> q.Inbound:
    message = await store.call(
        q.add_inbound,
        sender=sender,
        sender_e164=sender,
        body=body,
        binary=False,
        parts=1,
        sent_at=datetime.now(UTC) + timedelta(microseconds=next(_ids)),
        modem="sim1",
        now=datetime.now(UTC),
    )
    assert message is not None
    return message


async def test_stop_opts_out_confirms_once_and_cancels_queued_texts(
    config: Config, store: AsyncStore
) -> None:
    await recorded(config, store, missed())
    inbox = Inbox(config, store, asyncio.Event(), "sim1")
    await inbox.handle(await inbound(store, "Stop"))
    await inbox.handle(await inbound(store, "STOP"))
    (textback,) = await outbox(store, q.TEXTBACK)
    assert textback["state"] == "failed"
    assert str(textback["reason"]).startswith("cancelled: opted out")
    replies = await outbox(store, q.KEYWORD)
    assert len(replies) == 1
    assert "unsubscribed" in str(replies[0]["body"])
    await recorded(config, store, missed(age_s=1))
    assert len(await outbox(store, q.TEXTBACK)) == 1


async def test_start_opts_back_in_and_help_answers(config: Config, store: AsyncStore) -> None:
    inbox = Inbox(config, store, asyncio.Event(), "sim1")
    await inbox.handle(await inbound(store, "STOP"))
    await inbox.handle(await inbound(store, "start"))
    await inbox.handle(await inbound(store, "help"))
    facts = await store.call(q.facts, CALLER, datetime.now(UTC))
    assert not facts.opted_out
    bodies = [str(r["body"]) for r in await outbox(store, q.KEYWORD)]
    assert any("subscribed to Example Plumbing texts again" in b for b in bodies)
    assert any(b.startswith("Example Plumbing: call us on (212) 555-0100") for b in bodies)


async def test_loop_guard_mutes_an_auto_responder(config: Config, store: AsyncStore) -> None:
    inbox = Inbox(config, store, asyncio.Event(), "sim1")
    for _ in range(config.keywords.loop_guard_per_minute + 2):
        await inbox.handle(await inbound(store, "HELP"))
    replies = await outbox(store, q.KEYWORD)
    assert len(replies) == config.keywords.loop_guard_per_minute
    facts = await store.call(q.facts, CALLER, datetime.now(UTC))
    assert facts.muted


async def test_duplicate_delivery_is_kept_once(store: AsyncStore) -> None:
    sent = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    kwargs = dict(
        sender=CALLER,
        sender_e164=CALLER,
        body="hi",
        binary=False,
        parts=1,
        sent_at=sent,
        modem="sim1",
        now=datetime.now(UTC),
    )
    assert await store.call(q.add_inbound, **kwargs) is not None
    assert await store.call(q.add_inbound, **kwargs) is None
