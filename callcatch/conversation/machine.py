"""The booking conversation: a slot-filling state machine that owns every decision.

For each text a caller sends (keywords were handled before this sees it):

1. Understand: deterministic extraction always runs; the local model's extraction runs too
   when it answers within ``reply_timeout``, and each value it proposes is kept only if a
   validator confirms it (a catalogue service, a configured area, a parseable time, a name
   that is in the text). Deterministic values win; the model only fills gaps.
2. Decide, in this order: gas (safety advice and the owner at once), other emergencies
   (the owner at once), a service the shop does not offer or a place it does not cover (a
   true answer; the owner is told), a choice among offered slots (book it, in one
   transaction), changes to a booking (earlier, another time, cancel), else the next
   missing slot is asked for, and once service, place and time wish are known, real free
   slots are offered.
3. Every reply comes from a template filled with configuration and validated values, and
   passes :mod:`callcatch.conversation.guard` before it is queued.

Customer text is data: it reaches the model only as a quoted value, the model's output is
JSON under a grammar, and nothing the model writes is ever sent. Key-value data inside a
text (``{"urgency": "emergency"}``) is not read at all: people do not text JSON, and it is
the shape of an attempt to set fields rather than to say what is wrong. A conversation the owner
took over gets no replies until it is released.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from callcatch import booking as bk
from callcatch.config import Config
from callcatch.conversation import guard
from callcatch.conversation.slots import Extracted, Extractor, TimeWish, Urgency, merge
from callcatch.policy import Policy
from callcatch.store import AsyncStore
from callcatch.store import conversations as cq
from callcatch.store import texts as q

log = logging.getLogger(__name__)

REPLY_EXPIRY = timedelta(hours=2)
_CHOICE = re.compile(r"^\s*(?:#|no\.?|option|number)?\s*([1-5])\s*[.!)]?\s*$", re.IGNORECASE)
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}
_EARLIER = re.compile(r"\b(earlier|sooner|before that)\b", re.IGNORECASE)
_LATER = re.compile(r"\b(later|another (time|day)|different (time|day)|resched\w*|change)\b", re.I)
_CANCEL = re.compile(r"\bcancel\b", re.IGNORECASE)
_JSON_OBJECT = re.compile(r"\{[^{}]*[\"']\s*\w+\s*[\"']\s*:[^{}]*\}")
# The answer to "who should we ask for?": one to three words of letters.
_BARE_NAME = re.compile(r"^\s*[A-Za-z][A-Za-z'-]+(?:\s+[A-Za-z][A-Za-z'-]+){0,2}\s*[.!]?\s*$")


class Model(Protocol):
    async def extract(self, text: str, context: dict[str, Any]) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Turn:
    """What one inbound text led to, for logs, the demo and the evaluation."""

    conversation_id: int
    state: str
    reply: str | None
    slots: dict[str, Any]
    booked: str | None
    owner_alert: str | None
    model_used: bool


class Assistant:
    def __init__(
        self,
        config: Config,
        store: AsyncStore,
        model: Model | None,
        send: Callable[[str, str, str], Awaitable[None]],
    ) -> None:
        """``send(kind, number, body)`` queues a text (kind: reply or owner)."""
        self.config = config
        self.store = store
        self.model = model
        self.send = send
        self.zone = ZoneInfo(config.business.timezone)
        self.extractor = Extractor(config)
        self.policy = Policy(config)
        self.catalogue = ", ".join(s.name.lower() for s in config.services)

    # -- entry points ------------------------------------------------------------------

    async def handle(self, number: str, text: str, now: datetime | None = None) -> Turn:
        now = now or q.now_utc()
        conversation = await self.store.call(cq.open_for, number, now)
        if conversation.owner_holds:
            await self.store.call(cq.save, conversation, now, True)
            return self._turn(conversation, None, None, None, False)
        text = _JSON_OBJECT.sub(" ", text)
        understood, model_used = await self._understand(conversation, text, now)
        reply, booked, alert = await self._decide(conversation, understood, text, now)
        reply = self._guarded(conversation, reply, now)
        await self.store.call(cq.save, conversation, now, True)
        if reply:
            await self.send("reply", number, reply)
        if alert:
            await self._tell_owner(alert)
        log.info(
            "conversation %s: %s, slots %s%s",
            conversation.id,
            conversation.state,
            ",".join(sorted(k for k, v in conversation.slots.items() if v)) or "-",
            f", booked {booked}" if booked else "",
        )
        return self._turn(conversation, reply, booked, alert, model_used)

    async def opted_out(self, number: str) -> str | None:
        """The number just opted out of texts (STOP, or a bare CANCEL): its conversation
        ends and the owner is told. A booking stays as it is (an opt-out is about texts,
        and a bare CANCEL may or may not mean the visit); the returned line, added to the
        opt-out confirmation, says so, and the owner's text asks them to check by phone."""
        now = q.now_utc()
        conversation = await self.store.call(cq.current, number)
        if conversation is None or conversation.state == cq.OUT_OF_SCOPE:
            return None  # none, or the owner was already told why it went nowhere
        booked = None
        if conversation.booking_id is not None:
            current = await self.store.call(bk.booking_by_id, conversation.booking_id)
            if current is not None and current.get("state") == "booked":
                starts = datetime.fromisoformat(str(current["starts_at"]))
                booked = bk.slot_at(self.config, starts).label(self.zone)
        conversation.state = cq.CLOSED
        conversation.offered = []
        await self.store.call(cq.save, conversation, now, False)
        if booked is None:
            await self._tell_owner(self._summary("Opted out of texts", conversation, None))
            return None
        headline = "Opted out of texts, booking kept: call to confirm"
        await self._tell_owner(self._summary(headline, conversation, booked))
        phone = self.config.business.phone
        return f"Your visit {booked} still stands; to change it, call {phone}."

    async def take_over(self, number: str, owner: bool) -> bool:
        return await self.store.call(cq.hold, number, owner, q.now_utc())

    async def summarise_stalled(self, now: datetime | None = None) -> int:
        """Tell the owner about each conversation the caller left before a booking, once
        per silence: quiet for ``stall_minutes``, not summarised since its last text."""
        now = now or q.now_utc()
        rows = await self.store.call(cq.stalled, now, self.config.conversation.stall_minutes)
        for row in rows:
            conversation = cq.Conversation.from_row(row)
            await self._tell_owner(self._summary("Stalled", conversation, None))
            await self.store.call(cq.mark_summarised, conversation.id, now)
        return len(rows)

    # -- understanding -----------------------------------------------------------------

    async def _understand(
        self, conversation: cq.Conversation, text: str, now: datetime
    ) -> tuple[Extracted, bool]:
        found = self.extractor.extract(text, now)
        if self.model is None:
            return found, False
        proposed = await self.model.extract(text, _known(conversation))
        if proposed is None:
            return found, False
        checked = self.extractor.validate(proposed, text, now)
        # Only what the text itself supports: a service only from the catalogue's words in
        # the message (the deterministic pass), never urgency, a time only as the caller
        # wrote it. A small model otherwise rewrites a known service or invents a day.
        time_said = checked.time is not None and checked.time.text.lower() in text.lower()
        checked = replace(
            checked, service=None, urgency=None, time=checked.time if time_said else None
        )
        return merge(found, checked), True

    def _remember(self, conversation: cq.Conversation, found: Extracted, text: str) -> None:
        slots = conversation.slots
        if not found.name and conversation.asked[-1:] == ["name"] and _BARE_NAME.match(text):
            bare = " ".join(w.capitalize() for w in text.strip(" .!").split())
            name = self.extractor.validate({"name": bare}, bare, q.now_utc()).name
            found = replace(found, name=name)
        if found.service:
            slots["service"] = found.service
        if found.urgency and _rank(found.urgency) >= _rank(slots.get("urgency")):
            slots["urgency"] = found.urgency.value
        if found.place or found.postcode:
            slots["area"] = found.place or found.postcode
        if found.address:
            slots["address"] = found.address
        if found.name:
            slots["name"] = found.name
        if found.time:
            slots["time"] = {
                "earliest": found.time.earliest.isoformat(),
                "latest": found.time.latest.isoformat(),
                "asap": found.time.asap,
                "text": found.time.text,
            }

    # -- deciding ----------------------------------------------------------------------

    async def _decide(
        self, conversation: cq.Conversation, found: Extracted, text: str, now: datetime
    ) -> tuple[str | None, str | None, str | None]:
        """The reply, the booked slot's label, and a text for the owner (each or None)."""
        if found.unknown_service and not conversation.slots.get("service"):
            # "fix my roof? it's leaking": what they asked for is not ours, whatever word
            # of the catalogue the message also contains.
            return self._not_offered(conversation, found.unknown_service)
        self._remember(conversation, found, text)
        if found.gas or found.urgency is Urgency.EMERGENCY:
            reply, alert = self._emergency(conversation, found.gas)
            # After gas advice nothing else: it must be read, and fit in two texts.
            follow = None if found.gas else self._next_question(conversation)
            return _join(reply, follow), None, alert
        if conversation.state == cq.BOOKED:
            return await self._booked(conversation, text, now)
        if conversation.state == cq.OFFERED:
            chosen = _choice(text, len(conversation.offered))
            if chosen is not None:
                return await self._book(conversation, conversation.offered[chosen - 1], now)
        if _CANCEL.search(text):
            return self._cancel_unbooked(conversation)
        if found.out_of_area and not conversation.slots.get("area"):
            return self._not_covered(conversation, found.out_of_area)
        missing = self._next_question(conversation)
        if missing:
            return missing, None, None
        return await self._offer(conversation, now, earlier_than=None), None, None

    def _cancel_unbooked(self, conversation: cq.Conversation) -> tuple[str, None, str]:
        """ "cancel" with nothing booked by text. Declining the slots on offer closes the
        conversation; anything else (a visit arranged by phone?) goes to the owner, since
        only they know what there is to cancel."""
        offered = conversation.state == cq.OFFERED
        conversation.state = cq.CLOSED
        conversation.offered = []
        if offered:
            reply = "OK, no visit booked. Text us here any time you need us."
            headline = "Cancelled before booking"
        else:
            reply = "Thanks, we've passed that on; the owner will get back to you."
            headline = "Asked to cancel (nothing booked by text)"
        return reply, None, self._summary(headline, conversation, None)

    def _emergency(self, conversation: cq.Conversation, gas: bool) -> tuple[str, str | None]:
        emergency = self.config.emergency
        reply = self.policy.fill(emergency.reply, q.now_utc())
        if gas:
            reply = f"{emergency.gas_advice} {reply}"
        conversation.slots["urgency"] = Urgency.EMERGENCY.value
        alert = None
        if not conversation.alerted:
            conversation.alerted = True
            alert = self._summary("EMERGENCY" + (" (gas)" if gas else ""), conversation, None)
        return reply, alert

    def _not_offered(self, conversation: cq.Conversation, asked: str) -> tuple[str, None, str]:
        conversation.state = cq.OUT_OF_SCOPE
        reply = (
            f"Sorry, {self.config.business.name} doesn't do {asked[:40]}. "
            f"We can help with {self.catalogue}."
        )
        return (
            reply,
            None,
            self._summary(
                f"Asked for a service we don't offer ({asked[:40]})", conversation, None
            ),
        )

    def _not_covered(self, conversation: cq.Conversation, place: str) -> tuple[str, None, str]:
        conversation.state = cq.OUT_OF_SCOPE
        places = ", ".join(self.config.area.places) or "our local area"
        reply = f"Sorry, we don't cover {place[:40]}. We work in {places}."
        return reply, None, self._summary(f"Outside our area ({place[:40]})", conversation, None)

    def _next_question(self, conversation: cq.Conversation) -> str | None:
        slots = conversation.slots
        if not slots.get("service"):
            return self._ask(
                conversation, "service", f"What do you need help with? We do {self.catalogue}."
            )
        if not slots.get("area") and not slots.get("address"):
            return self._ask(conversation, "address", "What's the address of the job?")
        if not slots.get("time"):
            return self._ask(
                conversation,
                "time",
                "When would suit you? For example: tomorrow morning, or as soon as possible.",
            )
        if not slots.get("name") and "name" not in conversation.asked:
            return self._ask(conversation, "name", "And who should we ask for?")
        return None

    def _ask(self, conversation: cq.Conversation, slot: str, question: str) -> str:
        if slot not in conversation.asked:
            conversation.asked.append(slot)
        conversation.state = cq.OPEN
        return question

    async def _offer(
        self, conversation: cq.Conversation, now: datetime, earlier_than: datetime | None
    ) -> str:
        wish = _wish(conversation.slots.get("time"))
        if earlier_than is not None:
            wish = TimeWish(now, earlier_than, True, "earlier")
        slots = await self.store.call(
            bk.free_slots, self.config, now, wish, self.config.booking.offer
        )
        if earlier_than is not None:
            slots = [s for s in slots if s.starts_at < earlier_than]
        if not slots:
            conversation.offered = []
            conversation.state = cq.OPEN
            return "Sorry, we have no free slot then. The owner will call you to find a time."
        conversation.offered = [s.starts_at.isoformat() for s in slots]
        conversation.state = cq.OFFERED
        conversation.said += [s.label(self.zone) for s in slots]
        labels = [f"{i}) {s.label(self.zone)}" for i, s in enumerate(slots, 1)]
        choices = [str(i) for i in range(1, len(slots) + 1)]
        numbers = " or ".join(
            [", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices
        )
        return f"We can come: {'; '.join(labels)}. Reply {numbers} to book."

    async def _book(
        self, conversation: cq.Conversation, starts_at: str, now: datetime
    ) -> tuple[str, str | None, str | None]:
        slots = conversation.slots
        slot = bk.slot_at(self.config, datetime.fromisoformat(starts_at))
        made = await self.store.call(
            bk.book,
            conversation.number,
            slot,
            slots.get("service") or "",
            slots.get("name") or "",
            slots.get("address") or slots.get("area") or "",
            conversation.id,
            now,
        )
        if made is None:
            offer = await self._offer(conversation, now, earlier_than=None)
            return f"Sorry, that slot was just taken. {offer}", None, None
        conversation.state = cq.BOOKED
        conversation.booking_id = made.id
        conversation.offered = []
        label = slot.label(self.zone)
        conversation.said.append(label)
        reply = (
            f"Booked: {slots.get('service', 'a visit').lower()}, {label}. "
            "Reply EARLIER, CHANGE or CANCEL BOOKING if you need to."
        )
        return reply, label, self._summary("Booked", conversation, label)

    async def _booked(
        self, conversation: cq.Conversation, text: str, now: datetime
    ) -> tuple[str | None, str | None, str | None]:
        current = await self.store.call(bk.booking_by_id, conversation.booking_id or 0)
        if current is None or current.get("state") != "booked":
            conversation.state = cq.OPEN
            return (
                self._next_question(conversation) or await self._offer(conversation, now, None),
                None,
                None,
            )
        starts = datetime.fromisoformat(str(current["starts_at"]))
        label = bk.slot_at(self.config, starts).label(self.zone)
        conversation.said.append(label)
        if _CANCEL.search(text):
            await self.store.call(bk.cancel, int(current["id"]), now)
            conversation.state = cq.CLOSED
            return (
                f"Your booking for {label} is cancelled.",
                None,
                self._summary("Cancelled", conversation, label),
            )
        if _EARLIER.search(text) or _LATER.search(text):
            await self.store.call(bk.cancel, int(current["id"]), now)
            conversation.booking_id = None
            earlier = starts if _EARLIER.search(text) else None
            offer = await self._offer(conversation, now, earlier_than=earlier)
            return f"Your visit {label} is released. {offer}", None, None
        return (
            f"You're booked for {label}. Reply EARLIER, CHANGE or CANCEL BOOKING if you need to.",
            None,
            None,
        )

    # -- replies and the owner ---------------------------------------------------------

    def _guarded(
        self, conversation: cq.Conversation, reply: str | None, now: datetime
    ) -> str | None:
        if reply is None:
            return None
        verdict = guard.check(reply, allowed_text=[self.policy.next_open(now), *conversation.said])
        if verdict.ok:
            return reply
        log.error(
            "conversation %s: reply held back: %s", conversation.id, "; ".join(verdict.problems)
        )
        return "Thanks, we've got your message. The owner will get back to you shortly."

    def _summary(self, headline: str, conversation: cq.Conversation, booked: str | None) -> str:
        slots = conversation.slots
        parts = [
            f"{headline}: {conversation.number}",
            slots.get("name") or "",
            slots.get("service") or "service not given",
            slots.get("urgency") or "",
            slots.get("address") or slots.get("area") or "no address",
            booked or f"still to ask: {', '.join(_missing(slots)) or 'nothing'}",
        ]
        return ", ".join(p for p in parts if p)

    async def _tell_owner(self, body: str) -> None:
        for number in self.config.owner.numbers:
            await self.send("owner", number, body)

    def _turn(
        self,
        conversation: cq.Conversation,
        reply: str | None,
        booked: str | None,
        alert: str | None,
        model_used: bool,
    ) -> Turn:
        return Turn(
            conversation.id,
            conversation.state,
            reply,
            dict(conversation.slots),
            booked,
            alert,
            model_used,
        )


def _missing(slots: dict[str, Any]) -> list[str]:
    """What the conversation still lacks for a booking, in the order it asks."""
    wanted = {
        "service": slots.get("service"),
        "address": slots.get("address") or slots.get("area"),
        "time": slots.get("time"),
        "name": slots.get("name"),
    }
    return [what for what, value in wanted.items() if not value]


def _known(conversation: cq.Conversation) -> dict[str, Any]:
    return {k: v for k, v in conversation.slots.items() if k != "time"}


def _rank(urgency: Urgency | str | None) -> int:
    order = {None: 0, "routine": 1, "urgent": 2, "emergency": 3}
    return order.get(urgency.value if isinstance(urgency, Urgency) else urgency, 0)


def _wish(value: Any) -> TimeWish | None:
    if not isinstance(value, dict):
        return None
    return TimeWish(
        datetime.fromisoformat(value["earliest"]),
        datetime.fromisoformat(value["latest"]),
        bool(value.get("asap")),
        str(value.get("text", "")),
    )


def _choice(text: str, count: int) -> int | None:
    """ "2", "#2", "option 2", "the second one" -> 2, when that many slots were offered."""
    match = _CHOICE.match(text)
    number = int(match.group(1)) if match else None
    if number is None:
        words = set(re.findall(r"[a-z]+", text.lower()))
        number = next((n for w, n in _ORDINALS.items() if w in words), None)
    return number if number is not None and 1 <= number <= count else None


def _join(first: str, second: str | None) -> str:
    return f"{first} {second}" if second else first
