"""Record real AMI event streams, one file per test DID scenario, for replay tests.

Run from the repository root, as root (it starts the test PBX in its chroot)::

    /work/venv/bin/python scripts/record_ami.py          # or .venv/bin/python

It starts Asterisk fresh (scripts/asterisk.sh; ``--running`` uses one already running and
leaves it running), logs in to AMI as user ``callcatch`` (secret from
CALLCATCH_AMI_SECRET, default ``test-ami-secret``) with panoramisk, and places one call per
scenario with SIPp (tests/pbx.py), one at a time. No callcatch daemon may be connected: the
forwarded DID must take the fallback path (no Stasis app, UserEvent CallcatchMissed).

For each scenario it writes ``tests/recordings/<scenario>.jsonl``: every event whose
``Linkedid`` is that call's (the carrier channel's uniqueid), in the order received, one JSON
object per line with the headers exactly as panoramisk parsed them (names as Asterisk spelt
them; a list where a header repeated, e.g. a UserEvent's own ``Linkedid``). panoramisk's
synthetic empty ``content`` key (not an AMI header) is left out. Events of other calls and
events without a Linkedid (device state, registrations...) are dropped.

The callers and numbers below are what tests/test_recordings.py expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from panoramisk import Manager  # noqa: E402

from callcatch.pbx.rules import CallRules, LineMatcher  # noqa: E402
from tests.pbx import (  # noqa: E402
    AMI_PORT,
    AMI_SECRET,
    AMI_USER,
    PBX_HOST,
    Asterisk,
    CallResult,
    Phone,
    PhoneMode,
    call,
)

OUT = REPO / "tests" / "recordings"
CARRIER_PREFIX = "PJSIP/carrier-"


@dataclass(frozen=True)
class Scenario:
    name: str
    did: str
    caller: str
    description: str
    phones: tuple[tuple[int, PhoneMode, int], ...]  # (port, mode, answer_after_ms)
    hangup_after_ms: int | None = None
    hold_ms: int = 500
    diversion: str | None = None

    def run(self) -> CallResult:
        with ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-ami-")))
            for port, mode, answer_ms in self.phones:
                stack.enter_context(Phone(port, mode, answer_ms, timeout=60, workdir=workdir))
            return call(
                self.did,
                self.caller,
                hangup_after_ms=self.hangup_after_ms,
                hold_ms=self.hold_ms,
                diversion=self.diversion,
                timeout=40,
                workdir=workdir,
            )


FORWARDING_NUMBER = "+12125559100"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "caller-hangs-up",
        "5550101",
        "+12125559001",
        "phone1 rings, the caller CANCELs after 1.5 s",
        ((5081, "ring", 0),),
        hangup_after_ms=1500,
    ),
    Scenario(
        "rings-out",
        "5550102",
        "+12125559002",
        "phone1 rings 3 s, NOANSWER, hangup",
        ((5081, "ring", 0),),
    ),
    Scenario(
        "busy",
        "5550101",
        "+12125559003",
        "phone1 answers 486 Busy Here",
        ((5081, "busy", 0),),
    ),
    Scenario(
        "unavailable",
        "5550103",
        "+12125559004",
        "phone3 has no contact: CHANUNAVAIL",
        (),
    ),
    Scenario(
        "answered",
        "5550101",
        "+12125559005",
        "phone1 answers after 0.5 s, the caller hangs up 0.5 s later",
        ((5081, "answer", 500),),
    ),
    Scenario(
        "ring-group",
        "5550104",
        "+12125559006",
        "Local/group rings phone1 (rings) and phone2 (answers after 1 s)",
        ((5081, "ring", 0), (5082, "answer", 1000)),
    ),
    Scenario(
        "voicemail",
        "5550105",
        "+12125559007",
        "phone1 rings 3 s, then VoiceMail answers; the caller hangs up 1 s later",
        ((5081, "ring", 0),),
        hold_ms=1000,
    ),
    Scenario(
        "forwarded-fallback",
        "5550106",
        "+12125559008",
        f"Diversion from {FORWARDING_NUMBER}, no ARI app: UserEvent (Source: fallback)",
        (),
        diversion=FORWARDING_NUMBER,
    ),
    Scenario(
        "hook",
        "5550107",
        "+12125559009",
        "like caller-hangs-up, with the callcatch-hook hangup handler (Source: hook)",
        ((5081, "ring", 0),),
        hangup_after_ms=1500,
    ),
)


def headers(event: Any) -> dict[str, Any]:
    """The event's headers as panoramisk parsed them, minus its synthetic ``content``."""
    return {k: v for k, v in event.items() if not (k == "content" and v == "")}


def linkedids(event: dict[str, Any]) -> set[str]:
    value = next((v for k, v in event.items() if k.lower() == "linkedid"), None)
    if value is None:
        return set()
    return set(value) if isinstance(value, list) else {value}


def call_linkedid(events: list[dict[str, Any]], caller: str) -> str | None:
    """The linkedid of the call the carrier placed for ``caller``."""
    for ev in events:
        if (
            ev.get("Event") == "Newchannel"
            and str(ev.get("Channel", "")).startswith(CARRIER_PREFIX)
            and ev.get("Uniqueid") == ev.get("Linkedid")
            and ev.get("CallerIDNum") == caller
        ):
            return str(ev["Linkedid"])
    return None


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def decisions_of(events: list[dict[str, Any]]) -> list[str]:
    rules = CallRules(LineMatcher(["PJSIP/carrier"]))
    out = []
    for ev in events:
        for d in rules.handle(ev):
            out.append(
                f"{d.outcome} missed={d.missed} signal={d.signal} did={d.did} "
                f"caller={d.caller} forwarded_from={d.forwarded_from}"
            )
    return out


async def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def record(asterisk: Asterisk, scenarios: list[Scenario], out: Path) -> int:
    received: list[dict[str, Any]] = []
    manager = Manager(
        loop=asyncio.get_running_loop(),
        host=PBX_HOST,
        port=AMI_PORT,
        username=AMI_USER,
        secret=AMI_SECRET,
        ping_delay=3600,  # no pings during a recording
        reconnect_timeout=3600,
    )
    manager.register_event("*", lambda _manager, event: received.append(headers(event)))
    await manager.connect()
    await wait_until(lambda: manager.authenticated, 10, "AMI login (wrong secret?)")
    print(f"AMI logged in as {AMI_USER} on {PBX_HOST}:{AMI_PORT}")
    problems = 0
    try:
        for scenario in scenarios:
            mark = len(received)
            result = await asyncio.to_thread(scenario.run)
            await asyncio.to_thread(asterisk.wait_no_channels, 15)
            await asyncio.sleep(1.0)  # trailing events (Hangup of the last legs, Cdr...)
            seen = received[mark:]
            linkedid = call_linkedid(seen, scenario.caller)
            if linkedid is None:
                print(f"{scenario.name}: no Newchannel on the carrier for {scenario.caller}")
                problems += 1
                continue
            events = [ev for ev in seen if linkedid in linkedids(ev)]
            path = out / f"{scenario.name}.jsonl"
            with path.open("w", encoding="utf-8") as f:
                for ev in events:
                    f.write(json.dumps(ev, ensure_ascii=False) + "\n")
            decided = decisions_of(events)
            print(
                f"{scenario.name}: DID {scenario.did}, SIPp exit {result.returncode}, final "
                f"{result.final_status}; {len(events)} of {len(seen)} events kept -> "
                f"{shown(path)}; rules: {decided}"
            )
            if result.returncode != 0 or len(decided) != 1:
                problems += 1
            if scenario.name == "forwarded-fallback" and not any(
                ev.get("Event") == "UserEvent" for ev in events
            ):
                print("  no UserEvent: is a callcatch ARI app connected? (it must not be)")
                problems += 1
    finally:
        manager.close()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", help="only these (default: all)")
    parser.add_argument(
        "--running", action="store_true", help="use the running Asterisk, leave it running"
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios]
    unknown = set(args.scenarios) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(
            f"unknown scenario(s) {sorted(unknown)}; known: {[s.name for s in SCENARIOS]}"
        )
    if os.geteuid() != 0:
        print("record_ami.py: must run as root (it drives Asterisk in its chroot)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    asterisk = Asterisk()
    try:
        if not args.running:
            asterisk.start(fresh=True)
        print(asterisk.cli("core show version").strip())
        problems = asyncio.run(record(asterisk, chosen, args.out))
    finally:
        if not args.running:
            asterisk.stop()
    print("done" if not problems else f"{problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
