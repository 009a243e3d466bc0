"""Replay AMI streams recorded on the real Asterisk 22 through the call rules.

tests/recordings/<scenario>.jsonl holds every AMI event of one real call, as panoramisk
parsed it (scripts/record_ami.py; see tests/recordings/README.md). Each must come to the
decision the end-to-end test of that DID asserts, exactly once, whatever the replay order.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.pbx.rules import CallRules, LineMatcher

RECORDINGS = Path(__file__).resolve().parent / "recordings"
FORWARDING_NUMBER = "+12125559100"

# scenario: (outcome, signal, did, caller, forwarded_from); missed follows from the outcome
# and is asserted separately below.
EXPECTED: dict[str, tuple[Outcome, str, str, str, str | None]] = {
    "caller-hangs-up": (Outcome.CALLER_HUNG_UP, "inferred", "5550101", "+12125559001", None),
    "rings-out": (Outcome.NO_ANSWER, "inferred", "5550102", "+12125559002", None),
    "busy": (Outcome.BUSY, "inferred", "5550101", "+12125559003", None),
    "unavailable": (Outcome.UNAVAILABLE, "inferred", "5550103", "+12125559004", None),
    "answered": (Outcome.ANSWERED, "inferred", "5550101", "+12125559005", None),
    "ring-group": (Outcome.ANSWERED, "inferred", "5550104", "+12125559006", None),
    "voicemail": (Outcome.VOICEMAIL, "inferred", "5550105", "+12125559007", None),
    "forwarded-fallback": (
        Outcome.NO_ANSWER,
        "fallback",
        "5550106",
        "+12125559008",
        FORWARDING_NUMBER,
    ),
    "hook": (Outcome.CALLER_HUNG_UP, "hook", "5550107", "+12125559009", None),
}
MISSED = {name: name not in ("answered", "ring-group") for name in EXPECTED}


def load(name: str) -> list[dict[str, Any]]:
    path = RECORDINGS / f"{name}.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def new_rules() -> CallRules:
    return CallRules(LineMatcher(["PJSIP/carrier"]))


def replay(rules: CallRules, events: list[dict[str, Any]]) -> list[CallRecord]:
    decided: list[CallRecord] = []
    for event in events:
        decided.extend(rules.handle(event))
    return decided


def linkedids_of(event: dict[str, Any]) -> set[str]:
    value = event.get("Linkedid")
    if value is None:
        return set()
    return set(value) if isinstance(value, list) else {value}


def test_every_scenario_has_a_recording() -> None:
    assert sorted(p.stem for p in RECORDINGS.glob("*.jsonl")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recording_holds_one_call(name: str) -> None:
    events = load(name)
    assert events
    first = events[0]
    assert first["Event"] == "Newchannel"
    assert first["Channel"].startswith("PJSIP/carrier-")
    assert first["Uniqueid"] == first["Linkedid"]
    for event in events:
        assert linkedids_of(event) == {first["Linkedid"]}, event


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_recorded_call_comes_to_its_outcome(name: str) -> None:
    outcome, signal, did, caller, forwarded_from = EXPECTED[name]
    events = load(name)
    (record,) = replay(new_rules(), events)
    assert record.outcome is outcome
    assert record.missed is MISSED[name]
    assert record.signal == signal
    assert record.did == did
    assert record.caller == caller
    assert record.forwarded_from == forwarded_from
    assert record.detected_by is Detection.AMI
    assert record.line == "PJSIP/carrier"
    assert record.linkedid == events[0]["Linkedid"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_replaying_the_stream_twice_decides_once(name: str) -> None:
    events = load(name)
    rules = new_rules()
    assert len(replay(rules, events)) == 1
    assert replay(rules, events) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shuffled_events_never_raise(name: str) -> None:
    events = load(name)
    for seed in range(25):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        rules = new_rules()
        decided = replay(rules, shuffled) + replay(rules, shuffled)
        assert len(decided) <= 1, (seed, decided)
        for record in decided:
            assert record.linkedid == events[0]["Linkedid"]


def test_all_calls_in_one_stream_each_decided_once() -> None:
    streams = {name: load(name) for name in EXPECTED}
    # Interleave the calls event by event, as a busy PBX would.
    merged: list[dict[str, Any]] = []
    longest = max(len(events) for events in streams.values())
    for i in range(longest):
        merged.extend(events[i] for events in streams.values() if i < len(events))
    decided = {record.linkedid: record for record in replay(new_rules(), merged)}
    assert len(decided) == len(EXPECTED)
    for name, events in streams.items():
        record = decided[events[0]["Linkedid"]]
        assert (record.outcome, record.signal, record.caller) == (
            EXPECTED[name][0],
            EXPECTED[name][1],
            EXPECTED[name][3],
        )
