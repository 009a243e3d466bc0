"""One worker per modem drains the shared outbox, one text at a time, at the modem's pace.

The rule for a text in flight when the process dies: it is left ``sending``, and at the next
start it is failed as "interrupted", never resent. The network may already have it (AT+CMGS
was written), and a second "sorry we missed your call" is worse than a missing one; the owner
sees the failure in ``callcatch outbox``. A send that fails before the PDU reached the modem
is safe to retry, and is.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timedelta

from callcatch.config import ModemConfig, TextbackConfig
from callcatch.sms import pdu
from callcatch.sms.modem import CommandFailed, Modem, ModemError
from callcatch.store import AsyncStore
from callcatch.store import texts as q
from callcatch.tasks import sleep_unless

log = logging.getLogger(__name__)

_IDLE_POLL = 1.0


class OutboxWorker:
    def __init__(
        self,
        modem: Modem,
        config: ModemConfig,
        textback: TextbackConfig,
        store: AsyncStore,
        wakeup: asyncio.Event,
    ) -> None:
        self.modem = modem
        self.config = config
        self.textback = textback
        self.store = store
        self.wakeup = wakeup
        self.name = config.name
        self._reference = random.randrange(256)

    async def run(self, stopping: asyncio.Event) -> None:
        interrupted = await self.store.call(q.fail_interrupted, self.name, q.now_utc())
        for text_id in interrupted:
            log.warning(
                "outbox %s: was being sent by %s at a crash; not resent", text_id, self.name
            )
        while not stopping.is_set():
            if not self.modem.ready.is_set():
                await _wait_any(stopping, self.modem.ready, _IDLE_POLL)
                continue
            now = q.now_utc()
            # Cleared before looking, so a text queued while we look still wakes us.
            self.wakeup.clear()
            for text_id in await self.store.call(q.expire, now):
                log.info("outbox %s: expired unsent", text_id)
            text = await self.store.call(q.claim, self.name, now)
            if text is None:
                await self._idle(stopping)
                continue
            await self._deliver(text)
            if self.config.pace_seconds and await sleep_unless(stopping, self.config.pace_seconds):
                break

    async def _idle(self, stopping: asyncio.Event) -> None:
        due = await self.store.call(q.next_due)
        timeout = _IDLE_POLL
        if due is not None:
            timeout = min(_IDLE_POLL, max(0.0, (due - q.now_utc()).total_seconds()))
        await _wait_any(stopping, self.wakeup, timeout)

    async def _deliver(self, text: q.Text) -> None:
        now = q.now_utc()
        reason = await self._cancel_reason(text)
        if reason is not None:
            await self.store.call(q.mark_failed, text.id, f"cancelled: {reason}", now)
            log.info("outbox %s: cancelled: %s", text.id, reason)
            return
        try:
            parts = pdu.encode_submit(
                text.number,
                pdu.normalise(text.body),
                reference=self._next_reference(),
                max_parts=self.textback.max_parts,
                smsc=self.config.smsc or None,
            )
        except pdu.PduError as exc:
            await self.store.call(q.mark_failed, text.id, f"cannot be encoded: {exc}", now)
            log.error("outbox %s: cannot be encoded: %s", text.id, exc)
            return
        refs: list[int] = []
        try:
            for part in parts:
                refs.append(await self.modem.send_pdu(part.hex, part.tpdu_length))
        except ModemError as exc:
            await self._failed(text, exc, refs)
            return
        await self.store.call(q.mark_sent, text.id, refs, q.now_utc())
        log.info(
            "outbox %s: sent by %s in %d part(s), message reference(s) %s",
            text.id,
            self.name,
            len(refs),
            ",".join(map(str, refs)),
        )

    async def _cancel_reason(self, text: q.Text) -> str | None:
        """Last look before the modem: things may have changed while the text waited."""
        if text.kind not in (q.TEXTBACK, q.REPLY):
            return None
        facts = await self.store.call(q.facts, text.number, q.now_utc())
        if facts.opted_out:
            return "opted out"
        if text.kind == q.REPLY:
            return None
        return await self.store.call(q.answered_since, text.number, text.created_at)

    async def _failed(self, text: q.Text, exc: ModemError, refs: list[int]) -> None:
        now = q.now_utc()
        reason = str(exc) or type(exc).__name__
        if refs:
            reason = f"partly sent ({len(refs)} part(s)), then: {reason}"
            await self.store.call(q.mark_failed, text.id, reason, now)
            log.error("outbox %s: %s; not resent", text.id, reason)
            return
        if isinstance(exc, CommandFailed) and exc.permanent:
            await self.store.call(q.mark_failed, text.id, reason, now)
            log.error("outbox %s: failed for good: %s", text.id, reason)
            return
        if getattr(exc, "pdu_written", False):
            reason = f"no answer after the text went to the modem ({reason}); not resent"
            await self.store.call(q.mark_failed, text.id, reason, now)
            log.error("outbox %s: %s", text.id, reason)
            return
        if text.attempts >= self.textback.max_attempts:
            reason = f"gave up after {text.attempts} attempts: {reason}"
            await self.store.call(q.mark_failed, text.id, reason, now)
            log.error("outbox %s: %s", text.id, reason)
            return
        delay = self.textback.retry_seconds * 2 ** (text.attempts - 1)
        retry_at: datetime = now + timedelta(seconds=delay)
        await self.store.call(q.requeue, text.id, reason, retry_at, now)
        log.warning("outbox %s: %s; retrying in %.0f s", text.id, reason, delay)

    def _next_reference(self) -> int:
        self._reference = (self._reference + 1) % 256
        return self._reference


async def _wait_any(stopping: asyncio.Event, event: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(event.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
