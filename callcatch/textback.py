"""From a committed missed call to a committed text in the outbox (or a recorded reason).

Decisions are serialised: two missed calls from one number a millisecond apart still get
one text-back. The decision is stored with the call (``calls.textback``), so a call whose
decision was lost to a crash is decided at the next start (``catch_up``), and the unique
text-back per linkedid in the outbox makes a second decision harmless.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from callcatch.calls import CallRecord
from callcatch.config import Config
from callcatch.policy import Policy
from callcatch.store import AsyncStore
from callcatch.store import texts as q

log = logging.getLogger(__name__)


class TextBack:
    def __init__(self, config: Config, store: AsyncStore, wakeup: asyncio.Event) -> None:
        self.config = config
        self.store = store
        self.wakeup = wakeup
        self.policy = Policy(config)
        self._lock = asyncio.Lock()

    async def on_missed(self, call: CallRecord) -> None:
        await self.decide(call.linkedid)

    async def decide(self, linkedid: str) -> None:
        async with self._lock:
            row = await self.store.call(q.call, linkedid)
            if row is None or row["textback"] is not None or not row["missed"]:
                return
            now = q.now_utc()
            number = row["caller_e164"]
            facts = await self.store.call(q.facts, number, now) if number else None
            hourly = await self.store.call(q.textbacks_last_hour, now)
            decision = self.policy.decide(
                row["caller_raw"],
                number,
                row["caller_reason"],
                facts,
                hourly,
                now,
                datetime.fromisoformat(row["ended_at"]),
            )
            if not decision.send:
                await self.store.call(q.set_textback, linkedid, "skipped", decision.reason)
                log.info("call %s: no text-back: %s", linkedid, decision.reason)
            else:
                assert number and decision.expires_at
                text_id = await self.store.call(
                    q.queue,
                    kind=q.TEXTBACK,
                    number=number,
                    body=decision.body,
                    now=now,
                    expires_at=decision.expires_at,
                    not_before=decision.not_before,
                    linkedid=linkedid,
                )
                await self.store.call(q.set_textback, linkedid, "queued", f"outbox {text_id}")
                log.info("call %s: text-back queued (outbox %s)", linkedid, text_id)
                self.wakeup.set()
            if self.config.owner.notify and self.config.owner.numbers:
                await self.store.call(q.add_owner_notice, linkedid, now)

    async def catch_up(self) -> None:
        """Decide missed calls whose decision a crash lost (too old ones expire unsent)."""
        since = q.now_utc() - timedelta(minutes=self.config.textback.expiry_minutes)
        for row in await self.store.call(q.undecided_missed_calls, since):
            await self.decide(row["linkedid"])
