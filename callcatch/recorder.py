"""Where every detector hands its decisions: commit first, then log one line per call."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable

from callcatch.calls import CallRecord
from callcatch.numbers import CallerStatus, classify, masked
from callcatch.pbx.rules import CallbackAnswered
from callcatch.store import AsyncStore
from callcatch.store import texts as q

log = logging.getLogger(__name__)

_RETRY_DELAYS = (0.05, 0.2, 1.0, 5.0)


class Recorder:
    def __init__(self, store: AsyncStore, show_numbers: bool = False) -> None:
        self.store = store
        self.show_numbers = show_numbers
        # Called with each newly committed missed call (the text-back).
        self.on_missed: list[Callable[[CallRecord], Awaitable[None]]] = []

    async def record(self, call: CallRecord) -> bool:
        """Commit ``call`` once; True when this was its first report.

        A failing write (disk full, locked database) is retried a few times; if it still
        fails the call is left to the CDR backfill, which finds it at the next start.
        """
        for delay in (*_RETRY_DELAYS, None):
            try:
                new = await self.store.record_call(call)
                break
            except sqlite3.Error as exc:
                if delay is None:
                    log.error(
                        "call %s: could not be recorded (%s); the CDR backfill will find it",
                        call.linkedid,
                        exc,
                    )
                    return False
                log.warning("call %s: store write failed (%s), retrying", call.linkedid, exc)
                await asyncio.sleep(delay)
        if new:
            self._log_decision(call)
            if call.missed:
                await self._tell(call)
        else:
            log.debug(
                "call %s: already recorded, %s report ignored", call.linkedid, call.detected_by
            )
        return new

    async def callback(self, answered: CallbackAnswered) -> None:
        """The shop called ``answered.number`` and was answered: keep it for the outbox's
        last look before a delayed text-back."""
        number = classify(answered.number, self.store.store.country).e164
        if number is None:
            return
        await self.store.call(q.add_callback, answered.linkedid, number, answered.answered_at)
        log.info(
            "call %s: the shop called %s back and was answered",
            answered.linkedid,
            number if self.show_numbers else masked(number),
        )

    async def _tell(self, call: CallRecord) -> None:
        for listener in self.on_missed:
            try:
                await listener(call)
            except Exception:
                log.exception("call %s: acting on the missed call failed", call.linkedid)

    def _log_decision(self, call: CallRecord) -> None:
        caller = call.caller if self.show_numbers else masked(call.caller)
        status = classify(call.caller, self.store.store.country)
        if status.status is not CallerStatus.CALLABLE:
            caller = f"{caller} (not callable: {status.reason})"
        verdict = f"missed ({call.outcome})" if call.missed else "answered"
        forwarded = ""
        if call.forwarded_from:
            number = call.forwarded_from if self.show_numbers else masked(call.forwarded_from)
            forwarded = f", forwarded from {number}"
        log.info(
            "call %s: %s on %s, DID %s, caller %s%s [%s/%s]",
            call.linkedid,
            verdict,
            call.line,
            call.did or "-",
            caller or "-",
            forwarded,
            call.detected_by,
            call.signal,
        )
