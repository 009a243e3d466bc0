from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.pbx.rules import (
    CallbackAnswered,
    CallRules,
    LineMatcher,
    device_of,
    dialled_number,
)

TRUNK = "PJSIP/carrier-00000001"
LINKEDID = "1760000000.1"
CALLER = "2125550123"
DID = "5551000"
NOW = 1_760_000_100.0

Event = dict[str, Any]
_STATE_DESC = {"0": "Down", "4": "Ring", "5": "Ringing", "6": "Up"}


class CallEvents:
    """The AMI events of one call as Asterisk 22 sends them, channel by channel."""

    def __init__(
        self,
        channel: str = TRUNK,
        linkedid: str = LINKEDID,
        caller: str = CALLER,
        caller_name: str = "Jane Roe",
        exten: str = DID,
        context: str = "callcatch-inbound",
    ) -> None:
        self.linkedid = linkedid
        self.first = channel
        prefix, _, number = linkedid.rpartition(".")
        self._prefix, self._next = prefix, int(number)
        self.channels: dict[str, dict[str, str]] = {}
        self._add(channel, linkedid, "4", caller, caller_name, exten, context)

    def _add(
        self, channel: str, uniqueid: str, state: str, num: str, name: str, exten: str, ctx: str
    ) -> None:
        self.channels[channel] = {
            "Channel": channel,
            "ChannelState": state,
            "ChannelStateDesc": _STATE_DESC[state],
            "CallerIDNum": num,
            "CallerIDName": name,
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": "en",
            "AccountCode": "",
            "Context": ctx,
            "Exten": exten,
            "Priority": "1",
            "Uniqueid": uniqueid,
            "Linkedid": self.linkedid,
        }

    def snapshot(self, channel: str, prefix: str = "") -> Event:
        return {prefix + k: v for k, v in self.channels[channel].items()}

    def event(self, name: str, channel: str, **fields: Any) -> Event:
        return {"Event": name, "Privilege": "call,all", **self.snapshot(channel), **fields}

    def uniqueid(self, channel: str) -> str:
        return self.channels[channel]["Uniqueid"]

    # -- channel lifecycle

    def newchannel(self, channel: str | None = None, exten: str = "s") -> Event:
        if channel is None:
            return self.event("Newchannel", self.first)
        self._next += 1
        uniqueid = f"{self._prefix}.{self._next}"
        self._add(channel, uniqueid, "0", "", "", exten, "from-internal")
        return self.event("Newchannel", channel)

    def newstate(self, channel: str, state: str) -> Event:
        self.channels[channel]["ChannelState"] = state
        self.channels[channel]["ChannelStateDesc"] = _STATE_DESC[state]
        return self.event("Newstate", channel)

    def newexten(self, channel: str, application: str, data: str = "") -> Event:
        exten = self.channels[channel]["Exten"]
        return self.event(
            "Newexten", channel, Extension=exten, Application=application, AppData=data
        )

    def varset(self, channel: str, variable: str, value: str) -> Event:
        return self.event("VarSet", channel, Variable=variable, Value=value)

    def hangup(self, channel: str, cause: str = "16") -> Event:
        return self.event("Hangup", channel, Cause=cause, **{"Cause-txt": "Normal Clearing"})

    # -- Dial()

    def dial_begin(self, caller: str, dest: str) -> Event:
        return {
            **self.event("DialBegin", caller),
            **self.snapshot(dest, "Dest"),
            "DialString": device_of(dest).partition("/")[2],
        }

    def dial_end(self, caller: str, dest: str, status: str) -> Event:
        return {
            **self.event("DialEnd", caller),
            **self.snapshot(dest, "Dest"),
            "DialStatus": status,
        }

    def dial(self, caller: str, *phones: str) -> list[Event]:
        """``caller`` runs Dial() and every phone rings."""
        data = "&".join(device_of(p) for p in phones)
        events = [self.newexten(caller, "Dial", f"{data},25")]
        for phone in phones:
            events += [self.newchannel(phone), self.dial_begin(caller, phone)]
        events += [self.newstate(phone, "5") for phone in phones]
        return events

    def dial_ends(self, caller: str, status: str, *phones: str, cause: str = "16") -> list[Event]:
        """Dial() gives up on every phone with ``status``."""
        events: list[Event] = []
        for phone in phones:
            events += [self.dial_end(caller, phone, status), self.hangup(phone, cause)]
        return [*events, self.varset(caller, "DIALSTATUS", status)]

    def answered(self, caller: str, phone: str) -> list[Event]:
        return [
            self.newstate(phone, "6"),
            self.dial_end(caller, phone, "ANSWER"),
            self.newstate(caller, "6"),
            self.varset(caller, "DIALSTATUS", "ANSWER"),
        ]

    # -- other sources

    def hook(self, source: str = "hook", **fields: str) -> Event:
        values = {
            "CallerNum": self.channels[self.first]["CallerIDNum"],
            "CallerName": self.channels[self.first]["CallerIDName"],
            "DialStatus": "",
            "VMStatus": "",
            "Redirecting": "",
            "RedirectingReason": "",
            "Did": DID,
            "Source": source,
        }
        values.update(fields)
        event = self.event("UserEvent", self.first, UserEvent="CallcatchMissed")
        event["Linkedid"] = [self.linkedid, self.linkedid]
        return {**event, **values}

    def queue(self, name: str, event: str, member: str | None = None, **fields: str) -> Event:
        result = {**self.event(event, self.first), "Queue": name, **fields}
        if member is not None:
            result |= self.snapshot(member, "Dest")
            result |= {"Interface": device_of(member), "MemberName": device_of(member)}
        return result

    def core_show_channel(self, channel: str, application: str, duration: str) -> Event:
        return self.event(
            "CoreShowChannel",
            channel,
            ActionID="resync-1",
            Application=application,
            ApplicationData="",
            Duration=duration,
            BridgeId="",
        )


def make_rules() -> CallRules:
    rules = CallRules(LineMatcher(["PJSIP/carrier", "DAHDI/"]))
    rules._now = lambda: NOW
    return rules


def feed(events: Iterable[Mapping[str, object]], rules: CallRules | None = None) -> list[Any]:
    rules = rules or make_rules()
    records: list[CallRecord] = []
    for event in events:
        records += rules.handle(event)
    return records


def only(records: list[CallRecord]) -> CallRecord:
    assert len(records) == 1, records
    return records[0]


def ringing(c: CallEvents, *phones: str) -> list[Event]:
    return [
        c.newchannel(),
        c.newexten(c.first, "Set", f"CALLCATCH_DID={DID}"),
        *c.dial(c.first, *phones),
    ]


PHONE1 = "PJSIP/phone1-00000002"
PHONE2 = "PJSIP/phone2-00000003"
LOCAL1 = "Local/600@callcatch-group-00000001;1"
LOCAL2 = "Local/600@callcatch-group-00000001;2"


# -- outcomes of plain Dial() --------------------------------------------------------------


def test_caller_hangs_up_while_ringing() -> None:
    c = CallEvents()
    events = [
        *ringing(c, PHONE1),
        *c.dial_ends(c.first, "CANCEL", PHONE1),
        c.hangup(c.first, "127"),
    ]
    call = only(feed(events))
    assert call.outcome is Outcome.CALLER_HUNG_UP
    assert call.missed
    assert call.linkedid == LINKEDID
    assert call.caller == CALLER
    assert call.caller_name == "Jane Roe"
    assert call.did == DID
    assert call.line == "PJSIP/carrier"
    assert call.detected_by is Detection.AMI
    assert call.signal == "inferred"
    assert call.forwarded_from is None
    assert call.started_at == call.ended_at == datetime.fromtimestamp(NOW, UTC)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("NOANSWER", Outcome.NO_ANSWER),
        ("BUSY", Outcome.BUSY),
        ("CHANUNAVAIL", Outcome.UNAVAILABLE),
        ("CONGESTION", Outcome.UNAVAILABLE),
    ],
)
def test_dial_status_decides_the_outcome(status: str, outcome: Outcome) -> None:
    c = CallEvents()
    events = [*ringing(c, PHONE1), *c.dial_ends(c.first, status, PHONE1), c.hangup(c.first)]
    assert only(feed(events)).outcome is outcome


def test_answered_by_a_phone() -> None:
    c = CallEvents()
    events = [
        *ringing(c, PHONE1),
        *c.answered(c.first, PHONE1),
        c.hangup(PHONE1),
        c.hangup(c.first),
    ]
    call = only(feed(events))
    assert call.outcome is Outcome.ANSWERED
    assert not call.missed


def test_nothing_is_decided_before_the_trunk_hangs_up() -> None:
    c = CallEvents()
    rules = make_rules()
    assert feed([*ringing(c, PHONE1), *c.dial_ends(c.first, "NOANSWER", PHONE1)], rules) == []
    assert LINKEDID in rules.calls


def test_dialend_is_the_fallback_when_no_dialstatus_varset() -> None:
    c = CallEvents()
    events = [*ringing(c, PHONE1), c.dial_end(c.first, PHONE1, "BUSY"), c.hangup(c.first)]
    assert only(feed(events)).outcome is Outcome.BUSY


def test_dialend_without_dialstatus_is_a_caller_hang_up() -> None:
    c = CallEvents()
    events = ringing(c, PHONE1)
    dial_end = c.dial_end(c.first, PHONE1, "")
    del dial_end["DialStatus"]
    events += [dial_end, c.hangup(c.first)]
    assert only(feed(events)).outcome is Outcome.CALLER_HUNG_UP


def test_trunk_answered_by_the_dialplan_is_not_a_person() -> None:
    c = CallEvents()
    events = [
        c.newchannel(),
        c.newexten(c.first, "Answer"),
        c.newstate(c.first, "6"),
        c.newexten(c.first, "Playback", "closed"),
        c.hangup(c.first),
    ]
    assert only(feed(events)).missed


# -- ring groups through Local channels ----------------------------------------------------


def ring_group(c: CallEvents) -> list[Event]:
    events = [c.newchannel(), *c.dial(c.first, LOCAL1)]
    events.insert(3, c.newchannel(LOCAL2, exten="600"))
    return [*events, *c.dial(LOCAL2, PHONE1, PHONE2)]


def test_ring_group_answered_by_phone2_while_phone1_is_cancelled() -> None:
    c = CallEvents()
    events = [
        *ring_group(c),
        c.newstate(PHONE2, "6"),
        c.dial_end(LOCAL2, PHONE2, "ANSWER"),
        c.dial_end(LOCAL2, PHONE1, "CANCEL"),
        c.hangup(PHONE1, "26"),
        c.newstate(LOCAL2, "6"),
        c.newstate(LOCAL1, "6"),
        c.dial_end(c.first, LOCAL1, "ANSWER"),
        c.newstate(c.first, "6"),
        c.varset(c.first, "DIALSTATUS", "ANSWER"),
        c.hangup(PHONE2),
        c.hangup(LOCAL2),
        c.hangup(LOCAL1),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.ANSWERED


def test_cause_26_on_a_ringing_leg_alone_means_answered() -> None:
    c = CallEvents()
    events = [*ringing(c, PHONE1), c.hangup(PHONE1, "26"), c.hangup(c.first)]
    assert only(feed(events)).outcome is Outcome.ANSWERED


def test_cause_26_on_a_local_leg_is_not_an_answer() -> None:
    c = CallEvents()
    events = [*ring_group(c), c.hangup(LOCAL1, "26"), c.hangup(LOCAL2, "26"), c.hangup(c.first)]
    assert only(feed(events)).missed


def test_local_channel_up_then_voicemail_is_voicemail_not_answered() -> None:
    c = CallEvents()
    events = [
        *ring_group(c),
        *c.dial_ends(LOCAL2, "NOANSWER", PHONE1, PHONE2),
        c.newexten(LOCAL2, "VoiceMail", "100@default,u"),
        c.newstate(LOCAL2, "6"),
        c.newstate(LOCAL1, "6"),
        c.dial_end(c.first, LOCAL1, "ANSWER"),
        c.newstate(c.first, "6"),
        c.varset(c.first, "DIALSTATUS", "ANSWER"),
        c.hangup(LOCAL2),
        c.hangup(LOCAL1),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.VOICEMAIL


def test_local_channel_up_with_nothing_behind_it_is_no_answer() -> None:
    c = CallEvents()
    events = [
        *ring_group(c),
        c.newstate(LOCAL2, "6"),
        c.newstate(LOCAL1, "6"),
        c.dial_end(c.first, LOCAL1, "ANSWER"),
        c.varset(c.first, "DIALSTATUS", "ANSWER"),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.NO_ANSWER


def test_voicemail_on_the_trunk_channel() -> None:
    c = CallEvents()
    events = [
        *ringing(c, PHONE1),
        *c.dial_ends(c.first, "NOANSWER", PHONE1),
        c.newexten(c.first, "VoiceMail", "100@default,u"),
        c.newstate(c.first, "6"),
        c.varset(c.first, "VMSTATUS", "SUCCESS"),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.VOICEMAIL


# -- queues and pickup ---------------------------------------------------------------------


def test_queue_ring_no_answer_cycles_then_caller_abandons() -> None:
    c = CallEvents()
    events = [c.newchannel(), c.newexten(c.first, "Queue", "support")]
    events.append(c.queue("support", "QueueCallerJoin", Position="1", Count="1"))
    for n in range(3):
        member = f"PJSIP/phone1-0000000{n + 2}"
        events += [
            c.newchannel(member),
            c.queue("support", "AgentCalled", member),
            c.newstate(member, "5"),
            c.queue("support", "AgentRingNoAnswer", member, RingTime="15000"),
            c.hangup(member),
        ]
    events += [
        c.queue("support", "QueueCallerAbandon", Position="1", OriginalPosition="1"),
        c.queue("support", "QueueCallerLeave", Position="1", Count="0"),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.CALLER_HUNG_UP


def test_queue_member_connects() -> None:
    c = CallEvents()
    events = [
        c.newchannel(),
        c.newexten(c.first, "Queue", "support"),
        c.newchannel(PHONE1),
        c.queue("support", "AgentCalled", PHONE1),
        c.queue("support", "AgentConnect", PHONE1, HoldTime="4", RingTime="3"),
        c.queue("support", "AgentComplete", PHONE1, TalkTime="60", Reason="caller"),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.ANSWERED


def test_pickup_from_another_phone_is_answered() -> None:
    c = CallEvents()
    other = CallEvents(channel="PJSIP/phone3-00000009", linkedid="1760000050.9", exten="*8")
    events = ringing(c, PHONE1)
    pickup = {**other.event("Pickup", other.first), **c.snapshot(PHONE1, "Target")}
    events += [other.newchannel(), pickup, c.hangup(PHONE1), c.hangup(c.first)]
    call = only(feed(events))
    assert call.outcome is Outcome.ANSWERED
    assert pickup["TargetLinkedid"] == LINKEDID


# -- calls that are not inbound ------------------------------------------------------------


def test_outbound_call_is_not_recorded() -> None:
    c = CallEvents(channel="PJSIP/phone1-00000001", exten="12125550199", context="from-internal")
    carrier = "PJSIP/carrier-00000002"
    rules = make_rules()
    events = [
        c.newchannel(),
        *c.dial(c.first, carrier),
        *c.dial_ends(c.first, "NOANSWER", carrier),
        c.hangup(c.first),
    ]
    assert feed(events, rules) == []
    assert rules.calls == {}


def test_internal_call_is_not_recorded() -> None:
    c = CallEvents(channel="PJSIP/phone1-00000001", exten="102", context="from-internal")
    events = [c.newchannel(), *c.dial(c.first, PHONE2), *c.dial_ends(c.first, "BUSY", PHONE2)]
    assert feed([*events, c.hangup(c.first)]) == []


def test_analog_line_inbound_missed() -> None:
    c = CallEvents(channel="DAHDI/1-1", exten="s", context="callcatch-analog")
    events = [*ringing(c, PHONE1), *c.dial_ends(c.first, "NOANSWER", PHONE1), c.hangup(c.first)]
    call = only(feed(events))
    assert call.outcome is Outcome.NO_ANSWER
    assert call.line == "DAHDI/1"
    assert call.did is None


def test_line_matcher() -> None:
    lines = LineMatcher(["PJSIP/carrier", "DAHDI/"])
    assert lines.line_of("PJSIP/carrier-0000002a") == "PJSIP/carrier"
    assert lines.line_of("DAHDI/12-1") == "DAHDI/12"
    assert lines.line_of("PJSIP/carrier2-00000001") is None
    assert lines.line_of("PJSIP/phone1-00000001") is None
    assert lines.line_of("Local/carrier@x-00000001;1") is None


# -- the explicit signal -------------------------------------------------------------------


def test_hook_before_hangup_decides_and_the_hangup_adds_nothing() -> None:
    c = CallEvents()
    rules = make_rules()
    events = [
        *ringing(c, PHONE1),
        *c.dial_ends(c.first, "NOANSWER", PHONE1),
        c.newexten(c.first, "VoiceMail", "100@default,u"),
    ]
    assert feed(events, rules) == []
    call = only(rules.handle(c.hook(DialStatus="NOANSWER", VMStatus="SUCCESS")))
    assert call.outcome is Outcome.VOICEMAIL
    assert call.signal == "hook"
    assert call.linkedid == LINKEDID
    assert rules.handle(c.hangup(c.first)) == []


def test_hook_dial_status_wins_over_inference() -> None:
    c = CallEvents()
    events = [*ringing(c, PHONE1), c.hook(DialStatus="BUSY"), c.hangup(c.first)]
    call = only(feed(events))
    assert call.outcome is Outcome.BUSY
    assert call.signal == "hook"


def test_fallback_hook_uses_the_redirecting_reason() -> None:
    c = CallEvents(exten="5551299")
    events = [
        c.newchannel(),
        c.newexten(c.first, "Stasis", "callcatch,forwarded"),
        c.hook(
            "fallback",
            DialStatus="NOANSWER",
            Redirecting="+12125550199",
            RedirectingReason="no_answer",
            Did="5551299",
        ),
        c.newexten(c.first, "Hangup"),
        c.hangup(c.first),
    ]
    call = only(feed(events))
    assert call.outcome is Outcome.NO_ANSWER
    assert call.forwarded_from == "+12125550199"
    assert call.signal == "fallback"
    assert call.did == "5551299"


def test_fallback_hook_busy_reason() -> None:
    c = CallEvents()
    event = c.hook("fallback", DialStatus="NOANSWER", RedirectingReason="user-busy")
    assert only(feed([c.newchannel(), event])).outcome is Outcome.BUSY


def test_hook_for_a_call_never_seen_is_recorded() -> None:
    c = CallEvents()
    call = only(feed([c.hook(DialStatus="CANCEL", CallerNum="+12125550123")]))
    assert call.outcome is Outcome.CALLER_HUNG_UP
    assert call.caller == "+12125550123"
    assert call.line == "PJSIP/carrier"
    assert call.did == DID


def test_other_user_events_are_ignored() -> None:
    c = CallEvents()
    event = c.hook(DialStatus="CANCEL") | {"UserEvent": "SomethingElse"}
    assert feed([c.newchannel(), event]) == []


def test_hook_without_linkedid_is_ignored() -> None:
    event = {"Event": "UserEvent", "UserEvent": "CallcatchMissed", "DialStatus": "NOANSWER"}
    assert feed([event]) == []


def test_hook_after_a_queue_member_answered_is_answered() -> None:
    c = CallEvents()
    events = [
        c.newchannel(),
        c.newexten(c.first, "Queue", "support"),
        c.newchannel(PHONE1),
        c.queue("support", "AgentConnect", PHONE1, HoldTime="4", RingTime="3"),
        c.hook(DialStatus=""),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.ANSWERED


# -- repetition and junk -------------------------------------------------------------------


def test_replayed_events_give_one_record() -> None:
    c = CallEvents()
    events = [*ringing(c, PHONE1), *c.dial_ends(c.first, "NOANSWER", PHONE1), c.hangup(c.first)]
    assert len(feed(events + events)) == 1


def test_replayed_hook_gives_one_record() -> None:
    c = CallEvents()
    hook = c.hook(DialStatus="NOANSWER")
    assert len(feed([c.newchannel(), hook, hook, c.hangup(c.first), hook])) == 1


def test_two_calls_at_once_are_kept_apart() -> None:
    a = CallEvents()
    b = CallEvents(channel="PJSIP/carrier-00000010", linkedid="1760000000.10", caller="2015550123")
    phone = "PJSIP/phone2-00000011"
    events = [
        *ringing(a, PHONE1),
        *ringing(b, phone),
        *b.answered(b.first, phone),
        *a.dial_ends(a.first, "NOANSWER", PHONE1),
        a.hangup(a.first),
        b.hangup(b.first),
    ]
    first, second = feed(events)
    assert (first.linkedid, first.outcome) == (LINKEDID, Outcome.NO_ANSWER)
    assert (second.linkedid, second.outcome) == ("1760000000.10", Outcome.ANSWERED)
    assert second.caller == "2015550123"


def test_hangup_before_newchannel_decides_nothing() -> None:
    c = CallEvents()
    assert feed([c.hangup(c.first), c.newchannel()]) == []


def test_events_for_unknown_channels_are_ignored() -> None:
    c = CallEvents(linkedid="1760009999.5")
    events = [
        c.newstate(c.first, "6"),
        c.varset(c.first, "DIALSTATUS", "BUSY"),
        c.dial_end(c.first, c.first, "ANSWER"),
        c.hangup(c.first),
        c.queue("support", "QueueCallerAbandon"),
        {"Event": "Pickup", "TargetLinkedid": "nope"},
    ]
    assert feed(events) == []


def test_event_without_uniqueid_is_ignored_and_the_call_goes_on() -> None:
    c = CallEvents()
    broken = c.newchannel()
    del broken["Uniqueid"]
    rules = make_rules()
    assert feed([broken], rules) == []
    assert rules.calls == {}
    stray_hangup = c.hangup(c.first)
    del stray_hangup["Uniqueid"]
    events = [c.newchannel(), stray_hangup, c.hangup(c.first)]
    assert only(feed(events, rules)).linkedid == LINKEDID


def test_list_header_values_take_the_last() -> None:
    c = CallEvents()
    events = [{k: [v] for k, v in c.newchannel().items()}, c.hangup(c.first)]
    events[0]["CallerIDNum"] = ["<unknown>", CALLER]
    assert only(feed(events)).caller == CALLER


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"Event": None},
        {"Event": ""},
        {"Event": []},
        {"Event": ["Newchannel", "Hangup"]},
        {"Event": "Newchannel"},
        {"Event": "Newchannel", "Linkedid": None, "Uniqueid": None, "Channel": None},
        {"Event": "Hangup", "Linkedid": {"a": 1}},
        {"Event": "CoreShowChannel", "Duration": "garbage"},
        {"Event": "DialEnd"},
        {"Event": "Newexten", "Linkedid": LINKEDID},
        {"Event": "UserEvent"},
        {"Event": "UserEvent", "UserEvent": "CallcatchMissed", "Linkedid": []},
        {"Event": "__init__"},
        {"Event": "handle"},
        {"Event": "Newchannel\x00"},
        {1: 2, None: None},
        {"event": "hangup", "linkedid": LINKEDID, "uniqueid": LINKEDID},
    ],
)
def test_malformed_events_never_raise(event: dict[Any, Any]) -> None:
    rules = make_rules()
    assert rules.handle(event) == []
    assert rules.calls == {}


@pytest.mark.parametrize(
    "caller", ["", "anonymous", "<script>alert(1)</script>", "9" * 40, "+000", "\u202e123"]
)
def test_odd_caller_ids_are_recorded_as_sent(caller: str) -> None:
    c = CallEvents(caller=caller)
    events = [*ringing(c, PHONE1), *c.dial_ends(c.first, "NOANSWER", PHONE1), c.hangup(c.first)]
    call = only(feed(events))
    assert call.caller == caller
    assert call.outcome is Outcome.NO_ANSWER


def test_newcallerid_updates_the_caller() -> None:
    c = CallEvents(caller="")
    first = c.newchannel()
    c.channels[c.first]["CallerIDNum"] = CALLER
    events = [first, c.event("NewCallerid", c.first), c.hangup(c.first)]
    assert only(feed(events)).caller == CALLER


# -- resync after a reconnect --------------------------------------------------------------


def test_resync_tracks_a_live_call_and_the_hangup_decides_it() -> None:
    c = CallEvents()
    c.newchannel(PHONE1)
    c.newstate(PHONE1, "5")
    events = [
        c.core_show_channel(c.first, "Dial", "00:00:05"),
        c.core_show_channel(PHONE1, "AppDial", "00:00:04"),
        *c.dial_ends(c.first, "NOANSWER", PHONE1),
        c.hangup(c.first),
    ]
    call = only(feed(events))
    assert call.outcome is Outcome.NO_ANSWER
    assert call.ended_at - call.started_at == timedelta(seconds=5)


def test_resync_of_a_bridged_call_is_answered() -> None:
    c = CallEvents()
    c.newchannel(PHONE1)
    c.newstate(PHONE1, "6")
    c.newstate(c.first, "6")
    events = [
        c.core_show_channel(c.first, "Dial", "00:01:05"),
        c.core_show_channel(PHONE1, "AppDial", "00:01:00"),
        c.hangup(PHONE1),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.ANSWERED


def test_resync_in_voicemail() -> None:
    c = CallEvents()
    c.newstate(c.first, "6")
    events = [c.core_show_channel(c.first, "VoiceMail", "00:00:40"), c.hangup(c.first)]
    assert only(feed(events)).outcome is Outcome.VOICEMAIL


def test_resync_order_does_not_matter() -> None:
    c = CallEvents()
    c.newchannel(PHONE1)
    c.newstate(PHONE1, "6")
    c.newstate(c.first, "6")
    events = [
        c.core_show_channel(PHONE1, "AppDial", "00:01:00"),
        c.core_show_channel(c.first, "Dial", "00:01:05"),
        c.hangup(PHONE1),
        c.hangup(c.first),
    ]
    assert only(feed(events)).outcome is Outcome.ANSWERED


def test_forget_drops_live_calls() -> None:
    c = CallEvents()
    rules = make_rules()
    feed(ringing(c, PHONE1), rules)
    assert LINKEDID in rules.calls
    rules.forget()
    assert rules.calls == {}
    assert feed([*c.dial_ends(c.first, "NOANSWER", PHONE1), c.hangup(c.first)], rules) == []


def test_decided_calls_stay_decided_after_forget() -> None:
    c = CallEvents()
    rules = make_rules()
    events = [*ringing(c, PHONE1), c.hangup(c.first)]
    assert len(feed(events, rules)) == 1
    rules.forget()
    assert feed([c.core_show_channel(c.first, "Dial", "00:00:01"), c.hangup(c.first)], rules) == []


def test_set_forwarded_from_is_kept_in_the_record() -> None:
    c = CallEvents()
    rules = make_rules()
    feed([c.newchannel()], rules)
    rules.set_forwarded_from(LINKEDID, "+12125550199")
    rules.set_forwarded_from(LINKEDID, "+19999999999")
    call = only(feed([c.hangup(c.first)], rules))
    assert call.forwarded_from == "+12125550199"


def test_shop_calling_a_number_back_is_reported_when_answered() -> None:
    rules = CallRules(LineMatcher(["PJSIP/carrier", "DAHDI/"]))
    phone = {"Channel": "PJSIP/phone1-00000010", "Uniqueid": "9.1", "Linkedid": "9.1"}
    trunk = {"Channel": "PJSIP/carrier-00000011", "Uniqueid": "9.2", "Linkedid": "9.1"}
    events = [
        {"Event": "Newchannel", **phone, "CallerIDNum": "101", "Exten": "+12125550123"},
        {"Event": "Newchannel", **trunk, "CallerIDNum": "101", "Exten": "s"},
        {
            "Event": "DialBegin",
            **phone,
            "DestChannel": trunk["Channel"],
            "DestUniqueid": "9.2",
            "DestLinkedid": "9.1",
            "DialString": "carrier/sip:+12125550123@127.0.0.2:5090",
        },
        {"Event": "Newstate", **trunk, "ChannelState": "6", "ChannelStateDesc": "Up"},
    ]
    decisions = [d for e in events for d in rules.handle(e)]
    assert len(decisions) == 1
    answered = decisions[0]
    assert isinstance(answered, CallbackAnswered)
    assert (answered.linkedid, answered.number) == ("9.1", "+12125550123")
    assert rules.handle({"Event": "Hangup", **phone, "Cause": "16"}) == []
    assert rules.outbound == {}


def test_an_unanswered_call_back_reports_nothing() -> None:
    rules = CallRules(LineMatcher(["PJSIP/carrier"]))
    phone = {"Channel": "PJSIP/phone1-00000020", "Uniqueid": "8.1", "Linkedid": "8.1"}
    events = [
        {"Event": "Newchannel", **phone},
        {
            "Event": "DialBegin",
            **phone,
            "DestChannel": "PJSIP/carrier-00000021",
            "DestUniqueid": "8.2",
            "DialString": "+12125550123@carrier",
        },
        {
            "Event": "Hangup",
            "Channel": "PJSIP/carrier-00000021",
            "Uniqueid": "8.2",
            "Linkedid": "8.1",
            "Cause": "19",
        },
        {"Event": "Hangup", **phone, "Cause": "16"},
    ]
    assert [d for e in events for d in rules.handle(e)] == []


@pytest.mark.parametrize(
    ("dial_string", "number"),
    [
        ("carrier/sip:+12125550123@127.0.0.2:5090", "+12125550123"),
        ("+12125550123@carrier", "+12125550123"),
        ("carrier/12125550123", "12125550123"),
        ("DAHDI/g0/2125550123", "2125550123"),
        ("carrier", None),
    ],
)
def test_dialled_number(dial_string: str, number: str | None) -> None:
    assert dialled_number(dial_string) == number
