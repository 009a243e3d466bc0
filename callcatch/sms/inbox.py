"""What the modems receive: texts (committed before the SIM copy is deleted), multipart
reassembly, delivery reports, and the keywords that come before anything else reads a text.

Keywords are whole-message matches, ignoring case, spaces and punctuation ("Stop.", " stop ",
"opt-out"): STOP and its synonyms opt the number out for good (one confirmation, every queued
text to it cancelled), START/UNSTOP opt back in, HELP answers with the business name and phone.
A text that is not a keyword is kept for the conversation. A number that sends more than
``loop_guard_per_minute`` texts a minute is another machine answering ours: it is muted for an
hour and gets no automatic reply (its STOP is still honoured).
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from callcatch.config import Config
from callcatch.numbers import classify, masked
from callcatch.policy import Policy
from callcatch.sms import pdu
from callcatch.store import AsyncStore
from callcatch.store import texts as q
from callcatch.tasks import TaskSet

log = logging.getLogger(__name__)

_PUNCTUATION = re.compile(r"[^\w\s]+")
MUTE_FOR = timedelta(hours=1)
KEYWORD_EXPIRY = timedelta(hours=1)
PARTS_WAIT = timedelta(hours=24)
_OWNER_COMMAND = re.compile(r"^\s*(TAKE\s*OVER|TAKE|RELEASE)\s+(\+?[\d\s().-]{6,})\s*$", re.I)


def keyword_of(body: str) -> str:
    """The text folded for keyword matching: "  Opt-out! " -> "OPT OUT"."""
    return " ".join(_PUNCTUATION.sub(" ", body).upper().split())


class Inbox:
    def __init__(
        self, config: Config, store: AsyncStore, wakeup: asyncio.Event, modem_name: str
    ) -> None:
        self.config = config
        self.store = store
        self.wakeup = wakeup
        self.modem_name = modem_name
        self.policy = Policy(config)
        # One text at a time per number (its conversation is read, changed and saved in
        # order); different callers are handled side by side, so that one caller's slow
        # model answer never delays another's reply beyond ``reply_timeout``.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.tasks = TaskSet("inbox", log)
        # The booking assistant, when there is one: (number, text) -> handled.
        self.converse: Callable[[str, str], Awaitable[object]] | None = None
        # The owner's TAKE/RELEASE commands: (number, owner holds it) -> done.
        self.take_over: Callable[[str, bool], Awaitable[bool]] | None = None
        # The assistant, told of an opt-out: number -> a line for the confirmation, or None.
        self.opted_out: Callable[[str], Awaitable[str | None]] | None = None

    # -- from the modem: these return only once what came in is committed ---------------

    async def on_sms(self, pdu_hex: str) -> None:
        now = q.now_utc()
        try:
            message = pdu.decode(pdu_hex)
        except pdu.PduError as exc:
            await self._keep_undecodable(pdu_hex, str(exc), now)
            return
        if isinstance(message, pdu.StatusReport):
            await self._report(message, now)
            return
        if message.concat_reference is not None and message.concat_total > 1:
            parts = await self.store.call(
                q.add_part,
                sender=message.sender,
                reference=message.concat_reference,
                total=message.concat_total,
                seq=message.concat_seq,
                body=message.text,
                sent_at=message.sent_at,
                modem=self.modem_name,
                now=now,
            )
            if parts is None:
                return
            body = "".join(part["body"] for part in parts)
            sent_at = _first_time(parts) or message.sent_at
            count = len(parts)
        else:
            body, sent_at, count = message.text, message.sent_at, 1
        await self._commit(message.sender, body, message.binary, count, sent_at, now)

    async def on_status_report(self, pdu_hex: str) -> None:
        try:
            message = pdu.decode(pdu_hex)
        except pdu.PduError as exc:
            log.warning("%s: undecodable status report ignored: %s", self.modem_name, exc)
            return
        if isinstance(message, pdu.StatusReport):
            await self._report(message, q.now_utc())

    async def _report(self, report: pdu.StatusReport, now: datetime) -> None:
        text_id = await self.store.call(
            q.record_report,
            modem=self.modem_name,
            reference=report.reference,
            recipient=report.recipient,
            status=report.status,
            delivered=report.delivered,
            final=report.final,
            now=now,
        )
        log.info(
            "outbox %s: delivery report for reference %d: status %d (%s)",
            text_id if text_id is not None else "?",
            report.reference,
            report.status,
            "delivered" if report.delivered else "not delivered",
        )

    async def _keep_undecodable(self, pdu_hex: str, problem: str, now: datetime) -> None:
        log.warning("%s: undecodable SMS kept as raw PDU: %s", self.modem_name, problem)
        inbound = await self.store.call(
            q.add_inbound,
            sender="",
            sender_e164=None,
            body=pdu_hex,
            binary=True,
            parts=1,
            sent_at=None,
            modem=self.modem_name,
            now=now,
        )
        if inbound is not None:
            await self.store.call(q.mark_handled, inbound.id, f"undecodable: {problem}")

    async def _commit(
        self,
        sender: str,
        body: str,
        binary: bool,
        parts: int,
        sent_at: datetime | None,
        now: datetime,
    ) -> None:
        sender_e164 = classify(sender, self.config.business.country).e164
        inbound = await self.store.call(
            q.add_inbound,
            sender=sender,
            sender_e164=sender_e164,
            body=body,
            binary=binary,
            parts=parts,
            sent_at=sent_at,
            modem=self.modem_name,
            now=now,
        )
        if inbound is None:
            log.info("%s: duplicate delivery from %s ignored", self.modem_name, masked(sender))
            return
        log.info("inbox %s: text from %s (%d part(s))", inbound.id, masked(sender), parts)
        self.tasks.spawn(self.handle(inbound))

    async def collect_stale_parts(self) -> None:
        """Parts whose siblings never came are kept as a partial message, not dropped."""
        stale = await self.store.call(q.stale_parts, q.now_utc() - PARTS_WAIT)
        groups: dict[tuple[str, int], list[dict[str, object]]] = {}
        for part in stale:
            groups.setdefault((str(part["sender"]), int(str(part["reference"]))), []).append(part)
        for (sender, _), parts in groups.items():
            body = "".join(str(p["body"]) for p in parts)
            await self._commit(sender, body, False, len(parts), None, q.now_utc())

    # -- keywords first, then the conversation ------------------------------------------

    async def handle_pending(self) -> None:
        """Texts committed before a crash but never handled."""
        for inbound in await self.store.call(q.unhandled_inbound):
            await self.handle(inbound)

    async def handle(self, inbound: q.Inbound) -> None:
        async with self._lock_for(inbound.sender_e164 or inbound.sender):
            how = await self._handle(inbound)
            await self.store.call(q.mark_handled, inbound.id, how)

    def _lock_for(self, number: str) -> asyncio.Lock:
        lock = self._locks.get(number)
        if lock is None:
            lock = self._locks[number] = asyncio.Lock()
        return lock

    async def _handle(self, inbound: q.Inbound) -> str:
        number = inbound.sender_e164
        if inbound.binary:
            return "binary message kept"
        if number is None:
            return "sender is not a phone number: no reply"
        now = q.now_utc()
        keywords = self.config.keywords
        word = keyword_of(inbound.body)
        recent = await self.store.call(q.inbound_last_minute, number, now)
        looping = recent > keywords.loop_guard_per_minute
        if looping:
            await self.store.call(q.mute, number, now + MUTE_FOR, "auto-responder loop")
            log.warning(
                "inbox %s: %s sent %d texts in a minute: muted for an hour",
                inbound.id,
                masked(number),
                recent,
            )
        facts = await self.store.call(q.facts, number, now)
        if word in keywords.stop_words:
            await self.store.call(q.opt_out, number, word, now)
            cancelled = await self.store.call(q.cancel_queued_for, number, "opted out", now)
            log.info(
                "inbox %s: %s opted out (%d text(s) cancelled)",
                inbound.id,
                masked(number),
                cancelled,
            )
            note = None
            if self.opted_out is not None and not facts.opted_out:
                note = await self.opted_out(number)
            if not facts.opted_out and not (looping or facts.muted):
                await self._reply(number, keywords.stop_reply, now, note)
            return "stop"
        if looping or facts.muted:
            return "muted"
        if word in keywords.start_words:
            await self.store.call(q.opt_in, number)
            log.info("inbox %s: %s opted back in", inbound.id, masked(number))
            await self._reply(number, keywords.start_reply, now)
            return "start"
        if word in keywords.help_words:
            await self._reply(number, keywords.help_reply, now)
            return "help"
        if number in self.config.owner.numbers:
            return await self._owner_command(number, inbound.body, now)
        if facts.opted_out:
            return "opted out: no reply"
        if self.converse is not None:
            await self.converse(number, inbound.body)
            return "answered by the assistant"
        return "kept for the conversation"

    async def _owner_command(self, owner: str, body: str, now: datetime) -> str:
        """``TAKE +12125550123``: the owner handles that caller, the assistant keeps quiet;
        ``RELEASE +12125550123`` gives the conversation back."""
        match = _OWNER_COMMAND.match(body)
        if match is None or self.take_over is None:
            return "from the owner: not a command"
        command, raw = match.group(1).upper(), match.group(2)
        number = classify(raw, self.config.business.country).e164
        if number is None:
            await self._reply(owner, f"callcatch: {raw} is not a phone number.", now)
            return "owner command: bad number"
        if number in self.config.owner.numbers:
            await self._reply(owner, f"callcatch: {number} is an owner's number.", now)
            return "owner command: an owner's number"
        holds = command.startswith("TAKE")
        async with self._lock_for(number):  # not in the middle of that caller's turn
            done = await self.take_over(number, holds)
        if not done:
            answer = f"callcatch: no conversation with {number}."
        elif holds:
            answer = (
                f"callcatch: {number} is yours; the assistant stays quiet until RELEASE {number}."
            )
        else:
            answer = f"callcatch: the assistant answers {number} again."
        await self._reply(owner, answer, now)
        return f"owner command: {command.lower()}"

    async def _reply(
        self, number: str, template: str, now: datetime, note: str | None = None
    ) -> None:
        body = self.policy.fill(template, now)
        await self.store.call(
            q.queue,
            kind=q.KEYWORD,
            number=number,
            body=f"{body} {note}" if note else body,
            now=now,
            expires_at=now + KEYWORD_EXPIRY,
        )
        self.wakeup.set()


def _first_time(parts: list[dict[str, object]]) -> datetime | None:
    stamps = [str(p["sent_at"]) for p in parts if p.get("sent_at")]
    return datetime.fromisoformat(min(stamps)) if stamps else None
