"""Faults a real Asterisk cannot produce on demand, played by :mod:`tests.fake_ami`.

Each test runs the real :class:`AmiWatcher`, rules, recorder and store against the fake
manager on 127.0.0.1 and a free port.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from callcatch.calls import CallRecord
from callcatch.config import AmiConfig, Secret
from callcatch.pbx.ami import AmiWatcher
from callcatch.pbx.rules import CallRules, LineMatcher
from callcatch.recorder import Recorder
from callcatch.store import AsyncStore, Store
from callcatch.tasks import Backoff
from tests.fake_ami import FakeAmi, frame
from tests.waiting import messages, until

PING = 0.2
PONG = 0.2
FIRST_BACKOFF = 0.5  # Backoff().first: the longest first reconnect delay
TRUNK = "PJSIP/carrier-00000001"
CALLER = "2125550123"
DID = "5551000"

Row = dict[str, Any]


# -- the events of one call ---------------------------------------------------------------


class Call:
    """The AMI events of one inbound call: the trunk channel rings one phone."""

    def __init__(
        self,
        linkedid: str,
        caller: str = CALLER,
        trunk: str = TRUNK,
        phone: str = "PJSIP/101-00000002",
        name: str = "Jane Roe",
    ) -> None:
        self.linkedid = linkedid
        self.caller = caller
        self.name = name
        self.trunk = trunk
        self.phone = phone
        prefix, _, number = linkedid.rpartition(".")
        self.phone_id = f"{prefix}.{int(number) + 1}"

    def snapshot(self, leg: str, state: str = "4") -> dict[str, str]:
        trunk = leg == "trunk"
        return {
            "Channel": self.trunk if trunk else self.phone,
            "ChannelState": state,
            "ChannelStateDesc": {"0": "Down", "4": "Ring", "5": "Ringing", "6": "Up"}[state],
            "CallerIDNum": self.caller if trunk else "101",
            "CallerIDName": self.name if trunk else "",
            "ConnectedLineNum": "<unknown>",
            "ConnectedLineName": "<unknown>",
            "Language": "en",
            "AccountCode": "",
            "Context": "from-carrier" if trunk else "from-internal",
            "Exten": DID if trunk else "s",
            "Priority": "1",
            "Uniqueid": self.linkedid if trunk else self.phone_id,
            "Linkedid": self.linkedid,
        }

    def event(self, name: str, leg: str = "trunk", **extra: str) -> bytes:
        state = "4" if leg == "trunk" else "5"
        return frame(
            {"Event": name, "Privilege": "call,all", **self.snapshot(leg, state), **extra}
        )

    def dest(self) -> dict[str, str]:
        return {"Dest" + k: v for k, v in self.snapshot("phone", "5").items()}

    def newchannel(self) -> bytes:
        return self.event("Newchannel")

    def ringing(self) -> bytes:
        """The dialplan dials the phone, which rings."""
        return b"".join(
            [
                self.event("Newexten", Extension=DID, Application="Dial", AppData="PJSIP/101,25"),
                self.event("Newchannel", "phone"),
                frame(
                    {
                        "Event": "DialBegin",
                        **self.snapshot("trunk"),
                        **self.dest(),
                        "DialString": "101",
                    }
                ),
                self.event("Newstate", "phone"),
            ]
        )

    def ends(self, status: str = "CANCEL") -> bytes:
        """Dial() ends with ``status`` and both channels hang up."""
        return b"".join(
            [
                frame(
                    {
                        "Event": "DialEnd",
                        **self.snapshot("trunk"),
                        **self.dest(),
                        "DialStatus": status,
                    }
                ),
                self.event("VarSet", Variable="DIALSTATUS", Value=status),
                self.hangup("phone"),
                self.hangup(),
            ]
        )

    def hangup(self, leg: str = "trunk") -> bytes:
        return self.event("Hangup", leg, Cause="16", **{"Cause-txt": "Normal Clearing"})

    def missed(self, status: str = "CANCEL") -> bytes:
        return self.newchannel() + self.ringing() + self.ends(status)

    def listed(self, leg: str, duration: str = "00:00:07") -> dict[str, str]:
        """The channel as CoreShowChannels lists it while the phone rings."""
        trunk = leg == "trunk"
        return {
            **self.snapshot(leg, "4" if trunk else "5"),
            "Application": "Dial" if trunk else "AppDial",
            "ApplicationData": "PJSIP/101,25" if trunk else "(Outgoing Line)",
            "Duration": duration,
            "BridgeId": "",
        }


# -- the rig ------------------------------------------------------------------------------


class CountingRecorder(Recorder):
    """The real recorder, keeping every report handed to it."""

    def __init__(self, store: AsyncStore) -> None:
        super().__init__(store, show_numbers=True)
        self.reports: list[CallRecord] = []

    async def record(self, call: CallRecord) -> bool:
        self.reports.append(call)
        return await super().record(call)


@dataclass
class Rig:
    ami: FakeAmi
    watcher: AmiWatcher
    recorder: CountingRecorder
    store: AsyncStore
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def start(self, wait_connected: bool = True) -> None:
        self.task = asyncio.create_task(self.watcher.run(self.stopping))
        if wait_connected:
            await self.wait_connected()

    async def wait_connected(self, within: float = 2.0) -> None:
        await asyncio.wait_for(self.watcher.connected.wait(), within)

    async def rows(self) -> list[Row]:
        await self.watcher.drain()
        return await self.store.run(self.store.store.calls)

    async def wait_rows(self, count: int, within: float = 2.0) -> list[Row]:
        deadline = time.monotonic() + within
        while True:
            rows = await self.rows()
            if len(rows) >= count or time.monotonic() > deadline:
                assert len(rows) == count, rows
                return rows
            await asyncio.sleep(0.01)

    def reports_of(self, linkedid: str) -> list[CallRecord]:
        return [r for r in self.recorder.reports if r.linkedid == linkedid]

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


def ami_config(port: int, connect_timeout: float = 1.0) -> AmiConfig:
    return AmiConfig(
        host="127.0.0.1",
        port=port,
        username="callcatch",
        secret=Secret("s3cret"),
        ping_interval=PING,
        pong_timeout=PONG,
        connect_timeout=connect_timeout,
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    ami = FakeAmi(secret="s3cret")
    await ami.start()
    store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    recorder = CountingRecorder(store)
    watcher = AmiWatcher(ami_config(ami.port), CallRules(LineMatcher(["PJSIP/carrier"])), recorder)
    running = Rig(ami, watcher, recorder, store)
    try:
        yield running
    finally:
        running.stopping.set()
        try:
            if running.task is not None:
                # run() must end by itself when told to stop, never by an exception.
                await asyncio.wait_for(running.task, 3)
            await watcher.drain()
        finally:
            store.close()
            await ami.stop()


# -- a call -------------------------------------------------------------------------------


async def test_missed_call_is_committed(rig: Rig) -> None:
    await rig.start()
    call = Call("1760000000.1")
    await rig.ami.push(call.missed("CANCEL"))

    [row] = await rig.wait_rows(1)
    assert row["linkedid"] == call.linkedid
    assert row["outcome"] == "caller-hung-up"
    assert row["missed"] == 1
    assert row["detected_by"] == "ami"
    assert row["signal"] == "inferred"
    assert row["line"] == "PJSIP/carrier"
    assert row["did"] == DID
    assert row["caller_e164"] == "+12125550123"
    assert row["caller_status"] == "callable"
    assert len(rig.reports_of(call.linkedid)) == 1


# -- a hung peer, a closed connection, a peer that is down ---------------------------------


async def test_half_open_connection_is_dropped_and_redialled(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callcatch")
    await rig.start()
    first = rig.ami.connections[0]
    hung_at = time.monotonic()
    rig.ami.hang()  # the socket stays open, pings go unanswered

    bound = PING + PONG + FIRST_BACKOFF + 0.4
    second = await rig.ami.wait_for_connections(2, within=bound + 1)
    assert second.opened_at - hung_at < bound
    assert first.closed_by_client, "the watcher must close the hung connection itself"
    assert messages(caplog, "no answer to Ping")
    # The new connection answers pings: it stays up over several ping intervals.
    await rig.wait_connected()
    pings = len(rig.ami.actions("Ping"))
    await rig.ami.wait_for_action("Ping", count=pings + 3, within=6 * PING)
    assert len(rig.ami.connections) == 2
    assert second.open


@pytest.mark.parametrize("fault", ["close", "shutdown-event"])
async def test_lost_connection_is_redialled_within_a_second(rig: Rig, fault: str) -> None:
    await rig.start()
    lost_at = time.monotonic()
    if fault == "close":
        await rig.ami.close_all()
    else:
        # Asterisk announces a shutdown before closing; the socket is left open here.
        await rig.ami.event("Shutdown", Privilege="system,all", Shutdown="Cleanly", Restart="True")

    second = await rig.ami.wait_for_connections(2, within=2.0)
    assert second.opened_at - lost_at < 1.0
    if fault == "shutdown-event":
        assert rig.ami.connections[0].closed_by_client
    await rig.wait_connected()
    assert len(rig.ami.actions("Login")) == 2


async def test_attempts_back_off_while_the_peer_is_down(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callcatch")
    await rig.start()
    down_at = time.time()
    await rig.ami.stop()

    # Three refused attempts: about 0.5 s, then 1 s, then 2 s apart.
    await until(lambda: len(messages(caplog, "unreachable")) >= 3, 5.0, "three attempts")
    attempts = [r.created for r in messages(caplog, "unreachable")]
    assert attempts[0] - down_at < 1.0
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 0.8 * 1.0 - 0.05 <= gaps[0] <= 1.0 + 0.2, gaps
    assert gaps[1] > 1.4 * gaps[0], gaps
    assert rig.alive
    assert not rig.watcher.connected.is_set()


def test_backoff_doubles_from_under_a_second_to_a_30_s_cap() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert 0.8 * ceiling <= delay <= ceiling, (attempt, delay)
    assert delays[0] < 1.0
    assert max(delays) <= 30.0
    assert delays[-1] >= 24.0
    backoff.reset()
    assert backoff.next_delay() < 1.0


async def test_asterisk_restart_on_the_same_port(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callcatch")
    await rig.start()
    port = rig.ami.port
    await rig.ami.stop()
    await until(lambda: bool(messages(caplog, "unreachable")), 2.0, "a refused attempt")
    assert not rig.watcher.connected.is_set()

    await rig.ami.start()
    assert rig.ami.port == port
    await rig.ami.wait_for_connections(2, within=2.5)
    await rig.wait_connected()

    call = Call("1760000100.1")
    await rig.ami.push(call.missed("BUSY"))
    [row] = await rig.wait_rows(1)
    assert row["linkedid"] == call.linkedid
    assert row["outcome"] == "busy"


@pytest.mark.parametrize("order", ["trunk-first", "phone-first"])
async def test_call_in_progress_at_reconnect_is_recorded_once(rig: Rig, order: str) -> None:
    await rig.start()
    call = Call("1760000200.1")
    await rig.ami.push(call.newchannel() + call.ringing())

    # The connection drops while the phone rings; the manager lists both channels.
    legs = [call.listed("trunk"), call.listed("phone")]
    rig.ami.channels = legs if order == "trunk-first" else legs[::-1]
    await rig.ami.close_all()
    await rig.ami.wait_for_connections(2, within=2.0)
    await rig.ami.wait_for_action("CoreShowChannels", count=2)
    await rig.wait_connected()
    assert rig.recorder.reports == [], "the drop itself decides nothing"

    await rig.ami.push(
        call.event("VarSet", Variable="DIALSTATUS", Value="NOANSWER")
        + call.hangup("phone")
        + call.hangup()
    )
    [row] = await rig.wait_rows(1)
    assert row["outcome"] == "no-answer"
    assert row["caller_raw"] == CALLER
    started = datetime.fromisoformat(row["started_at"])
    assert abs((datetime.now(UTC) - started).total_seconds() - 7) < 2

    await rig.ami.push(call.hangup() * 3)
    await asyncio.sleep(0.05)
    assert len(await rig.rows()) == 1
    assert len(rig.reports_of(call.linkedid)) == 1


# -- login ----------------------------------------------------------------------------------


async def test_refused_login_is_logged_and_retried_with_backoff(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callcatch")
    rig.ami.login_ok = False
    await rig.start(wait_connected=False)

    await rig.ami.wait_for_connections(3, within=3.0)
    refused = [r for r in messages(caplog, "refused") if r.levelno == logging.ERROR]
    assert refused, caplog.text
    assert "Authentication failed" in refused[0].getMessage()
    assert "s3cret" not in caplog.text
    times = rig.ami.times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < 1.0
    assert gaps[1] > 1.4 * gaps[0], gaps
    assert rig.alive
    assert not rig.watcher.connected.is_set()

    rig.ami.login_ok = True  # the installer fixes manager.conf
    await rig.wait_connected(within=3.0)


async def test_connection_closed_during_login_is_redialled_at_once(tmp_path: Path) -> None:
    ami = FakeAmi(secret="s3cret")
    ami.close_on_action = "Login"  # e.g. Asterisk's authlimit, or a manager still starting
    await ami.start()
    store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    connect_timeout = 1.5
    watcher = AmiWatcher(
        ami_config(ami.port, connect_timeout=connect_timeout),
        CallRules(LineMatcher(["PJSIP/carrier"])),
        Recorder(store),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(watcher.run(stopping))
    try:
        await ami.wait_for_connections(2, within=connect_timeout + FIRST_BACKOFF + 1)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 2)
        store.close()
        await ami.stop()
    # The close is seen at once: the second attempt follows after the first backoff delay.
    assert ami.times[1] - ami.times[0] < FIRST_BACKOFF + 0.4


# -- bad input ------------------------------------------------------------------------------


async def test_malformed_input_never_kills_the_watcher(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "callcatch")
    await rig.start()
    stray = Call("1760000300.1")
    early = Call("1760000400.1", trunk="PJSIP/carrier-00000009")
    junk = [
        b"\x00\x01\x02garbage\xff\xfe\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
        b"hello world\r\nno colon here at all\r\n\r\n",
        b"Event:Hangup\r\nUniqueid=1760000300.1\r\nLinkedid 1760000300.1\r\n\r\n",
        b"Event: Newexten\r\nChannel: PJSIP/carrier-0000000a\r\nAppData: \xff\xfe\xc3(\r\n"
        b"Uniqueid: 1760000500.1\r\nLinkedid: 1760000500.1\r\n\r\n",
        b"Event: UserEvent\r\nUserEvent: Big\r\nData: " + b"x" * 100_000 + b"\r\n\r\n",
        frame({"Event": "Newchannel", "Channel": "PJSIP/carrier-0000000b", "CallerIDNum": "1"}),
        frame({"Event": "Hangup", "Channel": "PJSIP/carrier-0000000c", "Cause": "16"}),
        frame({"Event": "Newchannel", "Channel": "PJSIP/carrier-0000000d", "Uniqueid": "1.1"}),
        frame({"Event": "DialEnd", "Linkedid": "1.1", "DialStatus": "ANSWER"}),
        stray.hangup(),  # a Hangup for a channel never seen
        early.hangup() + early.newchannel(),  # out of order: never decided, nothing breaks
        frame({"Response": "Success", "ActionID": "nobody-asked", "Message": "stray"}),
        frame({"Event": "VarSet", "Variable": "DIALSTATUS"}),
    ]
    for chunk in junk:
        await rig.ami.push(chunk)

    good = Call("1760000600.1")
    events = good.missed("NOANSWER")
    # A frame split over several reads, and the same Hangup five more times.
    await rig.ami.push_split([events[:7], events[7:500], events[500:]])
    await rig.ami.push(good.hangup() * 5)

    [row] = await rig.wait_rows(1)
    assert row["linkedid"] == good.linkedid
    assert row["outcome"] == "no-answer"
    await asyncio.sleep(0.05)
    assert len(rig.reports_of(good.linkedid)) == 1
    assert len(rig.recorder.reports) == 1
    assert messages(caplog, "ignored a malformed Newchannel")
    # Still the first connection, and still in step: pings keep being answered.
    pings = len(rig.ami.actions("Ping"))
    await rig.ami.wait_for_action("Ping", count=pings + 2, within=5 * PING)
    assert len(rig.ami.connections) == 1
    assert rig.watcher.connected.is_set()
    assert not messages(caplog, "task failed")


async def test_repeated_event_header_does_not_drop_the_connection(rig: Rig) -> None:
    await rig.start()
    call = Call("1760000700.1")
    await rig.ami.push(call.newchannel() + call.ringing())
    # Any AMI user can broadcast this with Action: UserEvent and an extra Event header.
    odd = frame({"Event": "UserEvent", "Privilege": "user,all", "UserEvent": "Promo"})
    odd = odd[:-2] + b"Event: Promo\r\n\r\n"
    await rig.ami.push(odd + call.ends("NOANSWER"))
    await asyncio.sleep(3 * PING)
    assert len(rig.ami.connections) == 1
    [row] = await rig.wait_rows(1, within=0.5)
    assert row["linkedid"] == call.linkedid


async def test_utf8_character_split_over_two_reads_is_kept(rig: Rig) -> None:
    await rig.start()
    call = Call("1760000750.1", name="José Núñez")
    first = call.newchannel()
    cut = first.index("é".encode()) + 1  # between the two bytes of é
    await rig.ami.push_split([first[:cut], first[cut:]])
    await rig.ami.push(call.ringing() + call.ends("NOANSWER"))

    [row] = await rig.wait_rows(1)
    assert row["caller_name"] == "José Núñez"


# -- caller ids -----------------------------------------------------------------------------

ODD_CALLERS = {
    "": "withheld",
    "<unknown>": "withheld",
    "Unknown": "withheld",
    "anonymous": "anonymous",
    "<b>markup</b>": "invalid",
    "1" * 40: "invalid",
    "ABC": "invalid",
    "+000": "invalid",
}


async def test_odd_caller_ids_are_recorded_as_not_callable(rig: Rig) -> None:
    await rig.start()
    linkedids = {}
    for number, caller in enumerate(ODD_CALLERS, start=1):
        call = Call(f"17600008{number:02d}.1", caller=caller)
        linkedids[call.linkedid] = caller
        await rig.ami.push(call.missed("NOANSWER"))

    rows = await rig.wait_rows(len(ODD_CALLERS))
    for row in rows:
        caller = linkedids[row["linkedid"]]
        assert row["caller_raw"] == caller
        assert row["caller_status"] == ODD_CALLERS[caller], row
        assert row["caller_e164"] is None
        assert row["caller_reason"]
        assert row["outcome"] == "no-answer"
    assert rig.alive and len(rig.ami.connections) == 1


# -- Getvar REDIRECTING ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("2125550199", "2125550199"), ("(null)", None), ("", None)]
)
async def test_getvar_redirecting_sets_forwarded_from(
    rig: Rig, value: str, expected: str | None
) -> None:
    rig.ami.variables["REDIRECTING(from-num)"] = value
    await rig.start()
    call = Call("1760000900.1")
    await rig.ami.push(call.newchannel())
    await rig.ami.wait_for_action("Getvar")
    await rig.watcher.drain()  # the Getvar reply is applied
    await rig.ami.push(call.ringing() + call.ends("NOANSWER"))

    [row] = await rig.wait_rows(1)
    assert row["forwarded_from"] == expected
    [getvar] = rig.ami.actions("Getvar")  # asked for the trunk channel only
    assert getvar["Channel"] == call.trunk
    assert getvar["Variable"] == "REDIRECTING(from-num)"
