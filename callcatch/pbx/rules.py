"""The rules that turn AMI events into one decision per inbound call.

Everything here is synchronous and free of I/O, so recorded event streams can be replayed
against it. Calls are keyed by linkedid: in Asterisk 12 and later every channel created on
behalf of a call (the trunk channel, the phones it dials, Local channel pairs of ring groups
and follow-me, queue members) carries the linkedid of the channel that started it.

A call is *inbound* when its first channel (uniqueid equal to linkedid) is on a configured
trunk or analog line. Calls started by a phone (outbound, or internal) never qualify.

While the call lives we collect evidence:

* a human answered: a leg other than the trunk channel, and not a Local channel, went Up
  (a phone or a queue member picked up); a ringing leg ended with cause 26, "answered
  elsewhere"; a ``Pickup`` named one of the call's channels; ``AgentConnect``;
* voicemail: a channel of the call ran ``VoiceMail`` (it answers the channel, but no
  person spoke to the caller);
* the trunk channel's last ``DIALSTATUS``, and a queue's ``QueueCallerAbandon``;
* the explicit signal: a ``UserEvent`` named ``CallcatchMissed`` raised by the shipped
  hangup handler or the forwarded-DID fallback. When present it wins over inference.

A leg that leaves the building (follow-me to the owner's mobile over a trunk) counts as a
person when it goes Up, even if the mobile's own voicemail took the call: Asterisk cannot
tell the two apart. Call confirmation on such legs (FreePBX's "Confirm Calls") makes the
Up mean a person again.

Calls the other way are watched for one fact only: a call started by a phone that leaves on
a trunk and is answered is the shop calling someone back (:class:`CallbackAnswered`), which
cancels a delayed text-back to that number.

The decision is made once, when the trunk channel hangs up (or at the explicit signal),
and a linkedid that was decided is never decided again however often events repeat.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from callcatch.calls import CallRecord, Detection, Outcome, outcome_of_dial, outcome_of_redirect

log = logging.getLogger(__name__)

HOOK_EVENT = "CallcatchMissed"
CAUSE_ANSWERED_ELSEWHERE = "26"
STATE_UP = "6"
_SEQUENCE = re.compile(r"-[0-9a-fA-F]+$")
_DURATION = re.compile(r"^(\d+):(\d\d):(\d\d)$")
_DECIDED_MEMORY = 10_000


def device_of(channel: str) -> str:
    """``PJSIP/carrier-0000001a`` -> ``PJSIP/carrier``; ``DAHDI/1-1`` -> ``DAHDI/1``."""
    return _SEQUENCE.sub("", channel)


def is_local(channel: str) -> bool:
    return channel.startswith("Local/")


class LineMatcher:
    """Which channels are the shop's inbound lines, from the configured channel names.

    ``PJSIP/carrier`` matches ``PJSIP/carrier-00000001``; a name ending in ``/`` matches
    every channel of that technology prefix, so ``DAHDI/`` covers all analog ports.
    """

    def __init__(self, lines: Iterable[str]) -> None:
        self.lines = tuple(lines)

    def line_of(self, channel: str) -> str | None:
        device = device_of(channel)
        for line in self.lines:
            if line.endswith("/"):
                if device.startswith(line):
                    return device
            elif device == line or device.startswith(line + "/"):
                return line
        return None


@dataclass
class _Call:
    linkedid: str
    channel: str
    line: str
    caller: str
    caller_name: str
    did: str | None
    started: float
    forwarded_from: str | None = None
    answered_by: str | None = None
    voicemail: bool = False
    abandoned: bool = False
    dial_status: str | None = None
    legs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallbackAnswered:
    """A call from the shop out through a trunk was answered by ``number``."""

    linkedid: str
    number: str
    answered_at: datetime


Decision = CallRecord | CallbackAnswered
_DIALLED = re.compile(r"\+?\d{6,}")


def dialled_number(dial_string: str) -> str | None:
    """The number in a Dial() string: ``carrier/sip:+12125550123@host`` or
    ``+12125550123@carrier`` give ``+12125550123``."""
    match = _DIALLED.search(dial_string.rpartition("/")[2] or dial_string)
    return match.group(0) if match else None


def _flat(value: object) -> str:
    """A header's value; when a header repeats (UserEvent fields that shadow the channel's
    own, for one), the last one is what the sender wrote."""
    if isinstance(value, list):
        value = value[-1] if value else ""
    return "" if value is None else str(value)


def normalise(event: Mapping[str, object]) -> dict[str, str]:
    return {str(k).lower(): _flat(v) for k, v in event.items()}


def _did_of(exten: str) -> str | None:
    exten = exten.strip()
    return None if exten in ("", "s", "h", "i", "t") else exten


class CallRules:
    """Feed every AMI event to :meth:`handle`; it returns the calls decided by it."""

    def __init__(self, lines: LineMatcher) -> None:
        self.lines = lines
        self.calls: dict[str, _Call] = {}
        self.decided: OrderedDict[str, None] = OrderedDict()
        # Resync lists channels in no promised order: legs seen before their call's first
        # channel wait here until it comes, and are dropped when the listing is complete.
        self._unplaced: dict[str, list[dict[str, str]]] = {}
        # Calls started by a phone: linkedid -> {trunk leg uniqueid: number dialled}.
        self.outbound: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._now = time.time

    # -- entry point -----------------------------------------------------------------

    def handle(self, event: Mapping[str, object]) -> list[Decision]:
        ev = normalise(event)
        name = ev.get("event", "")
        handler = getattr(self, "_on_" + name.lower(), None)
        if handler is None:
            return []
        try:
            result: list[Decision] = handler(ev)
        except (KeyError, ValueError) as exc:
            log.warning(
                "call %s: ignored a malformed %s event (%s)", ev.get("linkedid", "?"), name, exc
            )
            return []
        return result

    def forget(self) -> None:
        """Drop calls in progress (the connection is gone); a resync brings back the live."""
        self.calls.clear()
        self._unplaced.clear()
        self.outbound.clear()

    # -- channel lifecycle -----------------------------------------------------------

    def _on_newchannel(self, ev: dict[str, str]) -> list[Decision]:
        call = self._track(ev, started=self._now())
        first = ev["uniqueid"] == ev["linkedid"]
        if call is None and first and self.lines.line_of(ev["channel"]) is None:
            self.outbound[ev["linkedid"]] = {}
            while len(self.outbound) > _DECIDED_MEMORY:
                self.outbound.popitem(last=False)
        return []

    def _on_dialbegin(self, ev: dict[str, str]) -> list[Decision]:
        legs = self.outbound.get(ev.get("linkedid", ""))
        dest = ev.get("destchannel", "")
        if legs is not None and dest and self.lines.line_of(dest) is not None:
            number = dialled_number(ev.get("dialstring", ""))
            if number:
                legs[ev.get("destuniqueid", "")] = number
        return []

    def _on_coreshowchannel(self, ev: dict[str, str]) -> list[Decision]:
        """A channel listed by a resync: as Newchannel, plus what its state tells."""
        started = self._now() - _seconds(ev.get("duration", ""))
        call = self._track(ev, started=started)
        if call is None:
            if ev["uniqueid"] != ev["linkedid"]:
                self._unplaced.setdefault(ev["linkedid"], []).append(ev)
            return []
        self._apply_listed(call, ev)
        for leg in self._unplaced.pop(call.linkedid, []):
            call.legs.setdefault(leg["uniqueid"], leg.get("channel", ""))
            self._apply_listed(call, leg)
        return []

    def _on_coreshowchannelscomplete(self, ev: dict[str, str]) -> list[Decision]:
        self._unplaced.clear()
        return []

    def _apply_listed(self, call: _Call, ev: dict[str, str]) -> None:
        uniqueid = ev["uniqueid"]
        channel = ev.get("channel", "")
        if (
            uniqueid != call.linkedid
            and not is_local(channel)
            and ev.get("channelstate") == STATE_UP
        ):
            call.answered_by = call.answered_by or f"{channel} was up at resync"
        if ev.get("application", "").lower() == "voicemail":
            call.voicemail = True

    def _track(self, ev: dict[str, str], started: float) -> _Call | None:
        linkedid = ev["linkedid"]
        uniqueid = ev["uniqueid"]
        channel = ev["channel"]
        if linkedid in self.decided:
            return None
        call = self.calls.get(linkedid)
        if call is not None:
            call.legs.setdefault(uniqueid, channel)
            return call
        if uniqueid != linkedid:
            return None
        line = self.lines.line_of(channel)
        if line is None:
            return None
        call = _Call(
            linkedid=linkedid,
            channel=channel,
            line=line,
            caller=ev.get("calleridnum", ""),
            caller_name=ev.get("calleridname", ""),
            did=_did_of(ev.get("exten", "")),
            started=started,
        )
        call.legs[uniqueid] = channel
        self.calls[linkedid] = call
        log.debug("call %s: inbound on %s", linkedid, line)
        return call

    def _call_of(self, ev: dict[str, str]) -> _Call | None:
        return self.calls.get(ev.get("linkedid", ""))

    def _on_newexten(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is None:
            return []
        if ev.get("uniqueid") == call.linkedid and call.did is None:
            call.did = _did_of(ev.get("exten", ""))
        if ev.get("application", "").lower() == "voicemail":
            call.voicemail = True
        return []

    def _on_newcallerid(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is not None and ev.get("uniqueid") == call.linkedid:
            call.caller = ev.get("calleridnum", call.caller)
            call.caller_name = ev.get("calleridname", call.caller_name)
        return []

    def _on_newstate(self, ev: dict[str, str]) -> list[Decision]:
        legs = self.outbound.get(ev.get("linkedid", ""))
        if legs is not None and ev.get("channelstate") == STATE_UP:
            number = legs.pop(ev.get("uniqueid", ""), None)
            if number:
                answered = datetime.fromtimestamp(self._now(), UTC)
                return [CallbackAnswered(ev["linkedid"], number, answered)]
        call = self._call_of(ev)
        if call is None or ev.get("channelstate") != STATE_UP:
            return []
        channel = ev.get("channel", "")
        if ev.get("uniqueid") != call.linkedid and not is_local(channel):
            call.answered_by = call.answered_by or f"{channel} answered"
        return []

    def _on_varset(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is None or ev.get("uniqueid") != call.linkedid:
            return []
        variable = ev.get("variable", "").upper()
        if variable == "DIALSTATUS":
            call.dial_status = ev.get("value", "")
        return []

    def _on_dialend(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is None:
            return []
        dest = ev.get("destchannel", "")
        status = ev.get("dialstatus", "").upper()
        if status == "ANSWER" and dest and not is_local(dest):
            call.answered_by = call.answered_by or f"{dest} answered"
        if ev.get("uniqueid") == call.linkedid and call.dial_status is None:
            # Only a fallback: the caller's DIALSTATUS (VarSet) sums up all legs.
            call.dial_status = status or None
        return []

    def _on_pickup(self, ev: dict[str, str]) -> list[Decision]:
        call = self.calls.get(ev.get("targetlinkedid", ""))
        if call is not None:
            call.answered_by = call.answered_by or f"picked up by {ev.get('channel', '?')}"
        return []

    def _on_agentconnect(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is not None:
            member = ev.get("destchannel") or ev.get("membername", "?")
            call.answered_by = call.answered_by or f"queue member {member} answered"
        return []

    def _on_queuecallerabandon(self, ev: dict[str, str]) -> list[Decision]:
        call = self._call_of(ev)
        if call is not None:
            call.abandoned = True
        return []

    def _on_hangup(self, ev: dict[str, str]) -> list[Decision]:
        if ev.get("uniqueid") == ev.get("linkedid"):
            self.outbound.pop(ev.get("linkedid", ""), None)
        call = self._call_of(ev)
        if call is None:
            return []
        uniqueid = ev.get("uniqueid", "")
        if uniqueid != call.linkedid:
            channel = ev.get("channel", "")
            if ev.get("cause") == CAUSE_ANSWERED_ELSEWHERE and not is_local(channel):
                call.answered_by = call.answered_by or f"{channel} answered elsewhere"
            call.legs.pop(uniqueid, None)
            return []
        return [self._decide(call, self._inferred_outcome(call), "inferred")]

    # -- the explicit signal ---------------------------------------------------------

    def _on_userevent(self, ev: dict[str, str]) -> list[Decision]:
        if ev.get("userevent", "") != HOOK_EVENT:
            return []
        linkedid = ev.get("linkedid", "")
        if not linkedid:
            raise ValueError("CallcatchMissed without Linkedid")
        if linkedid in self.decided:
            return []
        call = self.calls.get(linkedid)
        if call is None:
            # The hook is explicit: it counts even on a line callcatch was not told about.
            channel = ev.get("channel", "")
            call = _Call(
                linkedid=linkedid,
                channel=channel,
                line=self.lines.line_of(channel) or device_of(channel) or "unknown",
                caller=ev.get("callernum") or ev.get("calleridnum", ""),
                caller_name=ev.get("callername") or ev.get("calleridname", ""),
                did=_did_of(ev.get("did", "")) or _did_of(ev.get("exten", "")),
                started=self._now(),
            )
        call.caller = ev.get("callernum", call.caller) or call.caller
        call.did = _did_of(ev.get("did", "")) or call.did
        call.forwarded_from = ev.get("redirecting") or call.forwarded_from
        source = ev.get("source", "hook") or "hook"
        if ev.get("vmstatus", "").upper() in ("SUCCESS", "USEREXIT"):
            outcome = Outcome.VOICEMAIL
        elif call.answered_by:
            # Queue() leaves no DIALSTATUS: what the events showed still counts.
            outcome = Outcome.ANSWERED
        elif call.voicemail:
            outcome = Outcome.VOICEMAIL
        elif source == "fallback":
            outcome = outcome_of_redirect(ev.get("redirectingreason"))
        else:
            outcome = outcome_of_dial(ev.get("dialstatus"))
        return [self._decide(call, outcome, source)]

    # -- decision ----------------------------------------------------------------------

    def _inferred_outcome(self, call: _Call) -> Outcome:
        if call.answered_by:
            return Outcome.ANSWERED
        if call.voicemail:
            return Outcome.VOICEMAIL
        if call.abandoned:
            return Outcome.CALLER_HUNG_UP
        outcome = outcome_of_dial(call.dial_status)
        # ANSWER with no human leg seen: a Local channel answered (an app behind it).
        return Outcome.NO_ANSWER if outcome is Outcome.ANSWERED else outcome

    def _decide(self, call: _Call, outcome: Outcome, signal: str) -> CallRecord:
        self.calls.pop(call.linkedid, None)
        self.decided[call.linkedid] = None
        while len(self.decided) > _DECIDED_MEMORY:
            self.decided.popitem(last=False)
        now = self._now()
        return CallRecord(
            linkedid=call.linkedid,
            caller=call.caller,
            caller_name=call.caller_name,
            did=call.did,
            forwarded_from=call.forwarded_from,
            line=call.line,
            started_at=datetime.fromtimestamp(call.started, UTC),
            ended_at=datetime.fromtimestamp(now, UTC),
            outcome=outcome,
            detected_by=Detection.AMI,
            signal=signal,
        )

    def set_forwarded_from(self, linkedid: str, number: str) -> None:
        call = self.calls.get(linkedid)
        if call is not None and number and not call.forwarded_from:
            call.forwarded_from = number


def _seconds(duration: str) -> float:
    match = _DURATION.match(duration.strip())
    if not match:
        return 0.0
    hours, minutes, seconds = (int(g) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds
