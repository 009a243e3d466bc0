"""The GSM modem transport against the simulator, through a real pseudo-terminal.

The first tests drive the simulator with raw bytes, to prove its unkindness really happens on
the line; the rest run :class:`callcatch.sms.modem.Modem` against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import tty
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from gsmmodem.pdu import decodeSmsPdu, encodeSmsSubmitPdu

from callcatch.config import ModemConfig, Secret
from callcatch.sms.modem import (
    CommandFailed,
    CommandTimeout,
    Modem,
    ModemError,
    ModemHealth,
    ModemIdentity,
    ModemUnavailable,
    classify_cme,
    classify_cms,
)
from tests.modem_sim import (
    ModemSim,
    StoredSms,
    build_deliver,
    build_deliver_parts,
    build_status_report,
    decode_deliver,
    tpdu_length,
)

REPO = Path(__file__).resolve().parent.parent
PIN = "1234"
CALLER = "+15557654321"
FINAL = rb"\r\n(OK|ERROR|\+CM[ES] ERROR: [^\r]*)\r\n$"


def submit(text: str = "Sorry we missed your call", number: str = CALLER) -> tuple[str, int]:
    part = encodeSmsSubmitPdu(number, text, reference=7)[0]
    return bytes(part.data).hex().upper(), part.tpduLength


def present(path: Path) -> bool:
    """The device link exists (a sync helper: a quick lstat, fine on the test loop)."""
    return os.path.lexists(path)


# ---- raw access to the simulator's pty ---------------------------------------------------


class RawPort:
    """The slave side opened like a terminal program would, read by polling."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.buf = bytearray()

    def close(self) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def _pull(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self.buf += os.read(self.fd, 4096)

    async def read_until(self, pattern: bytes, within: float = 2.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            self._pull()
            if re.search(pattern, self.buf):
                data = bytes(self.buf)
                self.buf.clear()
                return data
            if loop.time() > deadline:
                raise AssertionError(f"{pattern!r} not seen; got {bytes(self.buf)!r}")
            await asyncio.sleep(0.005)

    async def quiet(self, seconds: float) -> bytes:
        await asyncio.sleep(seconds)
        self._pull()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    async def ask(self, line: bytes) -> bytes:
        self.write(line + b"\r")
        return await self.read_until(FINAL)


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "dev" / "ttyGSM0"


@pytest.fixture
async def sim(link: Path) -> AsyncIterator[ModemSim]:
    simulator = ModemSim(link, pin=PIN)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


# ---- the simulator itself ----------------------------------------------------------------


async def test_sim_echo_errors_and_pin(sim: ModemSim, link: Path) -> None:
    port = RawPort(link)
    try:
        assert await port.ask(b"AT") == b"AT\r\r\nOK\r\n"
        assert await port.ask(b"AT+NONSENSE") == b"AT+NONSENSE\r\r\nERROR\r\n"
        assert await port.ask(b"AT+CMGF=1") == b"AT+CMGF=1\r\r\nERROR\r\n"  # PDU only
        assert await port.ask(b"AT+CIMI") == b"AT+CIMI\r\r\nERROR\r\n"  # CMEE=0: bare
        assert await port.ask(b"AT+CMEE=1") == b"AT+CMEE=1\r\r\nOK\r\n"
        assert await port.ask(b"AT+CIMI") == b"AT+CIMI\r\r\n+CME ERROR: 11\r\n"
        assert await port.ask(b"AT+CPIN?") == b"AT+CPIN?\r\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
        assert await port.ask(b'AT+CPIN="9999"') == b'AT+CPIN="9999"\r\r\n+CME ERROR: 16\r\n'
        assert sim.pin_attempts == 2
        assert await port.ask(b'AT+CPIN="1234"') == b'AT+CPIN="1234"\r\r\nOK\r\n'
        assert await port.ask(b"ATE0") == b"ATE0\r\r\nOK\r\n"
        assert await port.ask(b"AT") == b"\r\nOK\r\n"
        assert await port.ask(b"AT+CIMI") == b"\r\n001010123456789\r\n\r\nOK\r\n"
        assert await port.ask(b"AT+CMGL=4") == b"\r\nOK\r\n"
        assert await port.ask(b"ATZ") == b"\r\nOK\r\n"
        assert await port.ask(b"AT") == b"AT\r\r\nOK\r\n"  # ATZ turned echo back on
        assert await port.ask(b"AT+CMGR=5") == b"AT+CMGR=5\r\r\nERROR\r\n"  # ATZ: CMEE=0
    finally:
        port.close()


async def test_sim_cmgs_prompt_validation_and_cancel(sim: ModemSim, link: Path) -> None:
    pdu, length = submit()
    port = RawPort(link)
    try:
        for line in (b"ATE0", b"AT+CMEE=1", b'AT+CPIN="1234"'):
            await port.ask(line)
        port.write(b"AT+CMGS=%d\r" % length)
        assert await port.read_until(rb"> ") == b"\r\n> "
        assert await port.quiet(0.1) == b""  # no line end after the prompt
        sim.cmgs_delay = 0.3
        started = asyncio.get_running_loop().time()
        port.write(pdu.encode() + b"\x1a")
        assert await port.read_until(FINAL) == b"\r\n+CMGS: 0\r\n\r\nOK\r\n"
        assert asyncio.get_running_loop().time() - started >= 0.29
        assert [(s.pdu, s.mr, s.tpdu_length) for s in sim.sent] == [(pdu, 0, length)]
        sim.cmgs_delay = 0.0
        # Wrong length, bad hex, not an SMS-SUBMIT: +CMS ERROR: 304.
        deliver = build_deliver(CALLER, "hi")
        for length_given, body in (
            (length - 1, pdu),
            (5, "ZZ0011"),
            (tpdu_length(deliver), deliver),
        ):
            port.write(b"AT+CMGS=%d\r" % length_given)
            await port.read_until(rb"> ")
            port.write(body.encode() + b"\x1a")
            assert await port.read_until(FINAL) == b"\r\n+CMS ERROR: 304\r\n"
        # ESC cancels: OK, nothing sent.
        port.write(b"AT+CMGS=%d\r" % length)
        await port.read_until(rb"> ")
        port.write(pdu.encode() + b"\x1b")
        assert await port.read_until(FINAL) == b"\r\nOK\r\n"
        assert len(sim.sent) == 1
        sim.fail_next_cmgs(331)
        port.write(b"AT+CMGS=%d\r" % length)
        await port.read_until(rb"> ")
        port.write(pdu.encode() + b"\x1a")
        assert await port.read_until(FINAL) == b"\r\n+CMS ERROR: 331\r\n"
        port.write(b"AT+CMGS=%d\r" % length)
        await port.read_until(rb"> ")
        port.write(pdu.encode() + b"\x1a")
        assert await port.read_until(FINAL) == b"\r\n+CMGS: 1\r\n\r\nOK\r\n"
        assert (await sim.wait_sent(2))[1].mr == 1
    finally:
        port.close()


async def test_sim_unkindness_on_the_line(sim: ModemSim, link: Path) -> None:
    port = RawPort(link)
    try:
        await port.ask(b'AT+CPIN="1234"')
        # A URC inside another command's reply, before its final OK; another after the echo.
        sim.deliver(build_deliver(CALLER, "hello"), route="cmti", mid_reply_of="AT+CSQ")
        assert await port.ask(b"AT+CSQ") == (
            b'AT+CSQ\r\r\n+CSQ: 17,99\r\n\r\n+CMTI: "SM",1\r\n\r\nOK\r\n'
        )
        sim.inject_mid_reply("\r\n^RSSI: 12\r\n", "AT+CGSN", position="after_echo")
        assert await port.ask(b"AT+CGSN") == (
            b"AT+CGSN\r\r\n^RSSI: 12\r\n\r\n356938035643809\r\n\r\nOK\r\n"
        )
        # Between commands: garbage, RING, a direct +CMT, a +CDS.
        sim.garbage(b"\xff\xfe\x00junk\xff")
        sim.ring()
        deliver = build_deliver(CALLER, "direct")
        sim.deliver(deliver, route="cmt")
        report = build_status_report(0, CALLER)
        sim.status_report(report, route="cds")
        got = await port.read_until(rb"\+CDS: \d+\r\n[0-9A-F]+\r\n")
        assert got.startswith(b"\xff\xfe\x00junk\xff\r\nRING\r\n")
        assert f"\r\n+CMT: ,{tpdu_length(deliver)}\r\n{deliver}\r\n".encode() in got
        assert got.endswith(f"\r\n+CDS: {tpdu_length(report)}\r\n{report}\r\n".encode())
        # Silence: the next command and all after it, until ATZ.
        sim.hang_next()
        port.write(b"AT\r")
        port.write(b"AT+CSQ\r")
        assert await port.quiet(0.3) == b""
        assert sim.hung
        assert await port.ask(b"ATZ") == b"ATZ\r\r\nOK\r\n"
        assert not sim.hung
        # A delay on some commands.
        sim.set_delay(0.3, "AT+CSQ")
        started = asyncio.get_running_loop().time()
        await port.ask(b"AT+CSQ")
        assert asyncio.get_running_loop().time() - started >= 0.29
        sim.set_delay(0, "AT+CSQ")
        # Unplugged: the link goes, the open descriptor reads end-of-file or EIO.
        await sim.disappear()
        assert not present(link)
        with pytest.raises(OSError):
            data = os.read(port.fd, 100)
            if data == b"":
                raise OSError("end of file")
    finally:
        port.close()
    await sim.reappear()
    assert present(link) and sim.opened_ptys == 2
    port = RawPort(link)
    try:  # a fresh power-on: echo again, the SIM locked again, storage kept
        assert await port.ask(b"AT+CPIN?") == b"AT+CPIN?\r\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
        assert 1 in sim.storage
    finally:
        port.close()


def test_pdu_builders_round_trip() -> None:
    single = build_deliver(CALLER, "Hi, call me back @ 5pm {thanks}")
    decoded = decodeSmsPdu(single)
    assert decoded["type"] == "SMS-DELIVER"
    assert decoded["number"] == CALLER
    assert decoded["text"] == "Hi, call me back @ 5pm {thanks}"
    assert decoded["tpdu_length"] == tpdu_length(single)
    ucs2 = build_deliver("5551234", "Café ☕ 你好")
    assert decodeSmsPdu(ucs2)["text"] == "Café ☕ 你好"
    assert decode_deliver(ucs2)["sender"] == "5551234"
    assert decode_deliver(build_deliver("SHOP", "x"))["sender"] == "SHOP"

    long_text = "".join(f"Part of a long message number {i}. " for i in range(12))
    parts = build_deliver_parts(CALLER, long_text, reference=0x42)
    assert len(parts) == 3
    decoded_parts = [decode_deliver(p) for p in parts]
    assert [d["concat"] for d in decoded_parts] == [(0x42, 3, 1), (0x42, 3, 2), (0x42, 3, 3)]
    assert "".join(str(d["text"]) for d in decoded_parts) == long_text
    assert [decodeSmsPdu(p)["text"] for p in parts] == [d["text"] for d in decoded_parts]

    wide = "Grüße aus Köln, 我们明天见! " * 6
    wide_parts = build_deliver_parts(CALLER, wide, reference=7)
    assert len(wide_parts) == 3
    assert "".join(str(decode_deliver(p)["text"]) for p in wide_parts) == wide
    assert all(decode_deliver(p)["concat"][:2] == (7, 3) for p in wide_parts)  # type: ignore[index]

    report = build_status_report(42, CALLER, status=0x46)
    decoded = decodeSmsPdu(report)
    assert decoded["type"] == "SMS-STATUS-REPORT"
    assert (decoded["reference"], decoded["number"], decoded["status"]) == (42, CALLER, 0x46)


async def test_sim_as_subprocess_with_control_socket(link: Path, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.modem_sim",
        "--link",
        str(link),
        "--control",
        "127.0.0.1:0",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        host, port = re.match(r"control (\S+):(\d+)", line).groups()  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))

        async def control(command: str) -> str:
            writer.write(command.encode() + b"\n")
            return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()

        harness = Harness(modem_config(link))
        await harness.start()
        try:
            pdu, length = submit()
            assert await harness.modem.send_pdu(pdu, length) == 0
            sent = json.loads((await control("sent"))[3:])
            assert [(s["pdu"], s["mr"]) for s in sent] == [(pdu, 0)]
            deliver = build_deliver(CALLER, "over the socket")
            assert await control(f"deliver {deliver}") == "OK 1"
            await harness.until(lambda: harness.sms == [deliver])
            assert await control("fail_cmgs 38") == "OK"
            with pytest.raises(CommandFailed) as failed:
                await harness.modem.send_pdu(pdu, length)
            assert failed.value.code == 38
            state = json.loads((await control("state"))[3:])
            assert state["echo"] is False and state["pin_locked"] is False
            assert (await control("bogus")).startswith("ERR")
        finally:
            await harness.stop()
        assert await control("quit") == "OK"
        writer.close()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# ---- the transport -------------------------------------------------------------------------


def modem_config(link: Path, **changes: Any) -> ModemConfig:
    values: dict[str, Any] = {
        "name": "gsm-test",
        "port": link,
        "baud": 115200,
        "pin": Secret(PIN),
        "smsc": "",
        "pace_seconds": 0.0,
        "command_timeout": 0.5,
        "send_timeout": 4.0,
        "health_interval": 60.0,
    }
    values.update(changes)
    return ModemConfig(**values)


class Harness:
    """A Modem with recording callbacks, run in a task."""

    def __init__(self, config: ModemConfig) -> None:
        self.sms: list[str] = []
        self.sms_attempts = 0
        self.fail_sms = False
        self.reports: list[str] = []
        self.identities: list[ModemIdentity] = []
        self.healths: list[ModemHealth] = []
        self.modem = Modem(
            config,
            on_sms=self._on_sms,
            on_status_report=self._on_report,
            on_identity=self._on_identity,
            on_health=self._on_health,
        )
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _on_sms(self, pdu: str) -> None:
        self.sms_attempts += 1
        if self.fail_sms:
            raise RuntimeError("the store is down")
        self.sms.append(pdu)

    async def _on_report(self, pdu: str) -> None:
        self.reports.append(pdu)

    async def _on_identity(self, identity: ModemIdentity) -> None:
        self.identities.append(identity)

    async def _on_health(self, health: ModemHealth) -> None:
        self.healths.append(health)

    async def start(self, wait_ready: bool = True) -> None:
        self.task = asyncio.create_task(self.modem.run(self.stopping))
        if wait_ready:
            await self.ready()

    async def ready(self, within: float = 5.0) -> None:
        await asyncio.wait_for(self.modem.ready.wait(), within)

    async def until(self, condition: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 (a condition over several objects)
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 3)


@pytest.fixture
async def make(link: Path) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    started: list[Harness] = []

    async def factory(wait_ready: bool = True, **changes: Any) -> Harness:
        harness = Harness(modem_config(link, **changes))
        started.append(harness)
        await harness.start(wait_ready)
        return harness

    yield factory
    for harness in started:
        await harness.stop()


async def test_init_with_echo_on_and_pin(sim: ModemSim, make: Any) -> None:
    assert sim.echo and sim.pin_locked
    h = await make(smsc="+15550001111")
    assert sim.commands[:9] == [
        "ATZ",
        "ATE0",
        "AT+CGSN",
        "AT+CMEE=1",
        "AT+CPIN?",
        'AT+CPIN="1234"',
        "AT+CPIN?",
        "AT+CMGF=0",
        "AT+CNMI=2,1,0,1,0",
    ]
    assert 'AT+CSCA="+15550001111",145' in sim.commands
    assert sim.commands.index("AT+CMGL=4") > sim.commands.index("AT+CIMI")
    assert not sim.echo and not sim.pin_locked and sim.cmee == 1 and sim.cmgf == 0
    assert sim.cnmi == (2, 1, 0, 1, 0) and sim.smsc == "+15550001111"
    identity = ModemIdentity(imei="356938035643809", imsi="001010123456789")
    assert h.modem.identity == identity and h.identities == [identity]
    await h.until(lambda: h.modem.health is not None)
    assert h.modem.health == ModemHealth(signal=17, registration="home", operator="Sim Operator")


async def test_send_returns_reference_and_the_exact_pdu_went_out(sim: ModemSim, make: Any) -> None:
    h = await make()
    pdu, length = submit()
    assert await h.modem.send_pdu(pdu, length) == 0
    other, other_length = submit("Second text, ünïcödé ✓")
    first, second = await asyncio.gather(
        h.modem.send_pdu(other, other_length), h.modem.send_pdu(pdu.lower(), length)
    )
    assert {first, second} == {1, 2}
    sent = await sim.wait_sent(3)
    assert sent[0].pdu == pdu and sent[0].tpdu_length == length and sent[0].mr == 0
    assert sorted(s.pdu for s in sent[1:]) == sorted([other, pdu])
    with pytest.raises(ValueError):
        await h.modem.send_pdu(pdu, length + 1)
    with pytest.raises(ValueError):
        await h.modem.send_pdu("not hex", 3)


async def test_send_when_not_ready_is_unavailable(link: Path) -> None:
    modem = Modem(modem_config(link), on_sms=_ignore, on_status_report=_ignore)
    pdu, length = submit()
    with pytest.raises(ModemUnavailable):
        await modem.send_pdu(pdu, length)


async def _ignore(_: str) -> None:
    return None


async def test_cmti_inside_a_cmgs_reply_is_read_handed_on_and_deleted(
    sim: ModemSim, make: Any
) -> None:
    h = await make()
    incoming = build_deliver(CALLER, "Are you open on Sunday?")
    index = sim.deliver(incoming, mid_reply_of="AT+CMGS")
    assert index is not None and index in sim.storage
    pdu, length = submit()
    assert await h.modem.send_pdu(pdu, length) == 0
    await h.until(lambda: h.sms == [incoming] and not sim.storage)
    assert f"AT+CMGR={index}" in sim.commands and f"AT+CMGD={index}" in sim.commands
    # And between commands, with echo and garbage around it.
    second = build_deliver(CALLER, "Never mind")
    sim.garbage(b"\xff\r\n")
    sim.deliver(second)
    await h.until(lambda: h.sms == [incoming, second] and not sim.storage)


async def test_stored_messages_at_start_are_read_and_deleted(
    sim: ModemSim, make: Any, link: Path
) -> None:
    first = build_deliver(CALLER, "first, while the daemon was down")
    second = build_deliver("+15550000007", "second")
    report = build_status_report(9, CALLER)
    outgoing, _ = submit()
    sim.deliver(first)  # no AT+CNMI yet: stored silently
    sim.deliver(second)
    sim.status_report(report, route="cdsi")
    sim.storage[20] = StoredSms(3, outgoing)  # a stored sent SMS-SUBMIT: not ours to take
    h = await make()
    assert h.sms == [first, second]
    assert h.reports == [report]
    assert list(sim.storage) == [20]


async def test_a_message_arriving_during_init_is_not_left_behind(
    sim: ModemSim, make: Any, link: Path
) -> None:
    stored = build_deliver(CALLER, "stored before start")
    sim.deliver(stored)
    late = build_deliver(CALLER, "arrived while the stored one was handed on")
    h = Harness(modem_config(link, health_interval=60.0))

    async def slow_on_sms(pdu: str) -> None:
        if pdu == stored:
            sim.deliver(late)  # +CMTI now, before the modem is ready
            await asyncio.sleep(0.2)
        h.sms.append(pdu)

    h.modem.on_sms = slow_on_sms
    await h.start()
    try:
        await h.until(lambda: h.sms == [stored, late] and not sim.storage)
    finally:
        await h.stop()


async def test_direct_cmt_and_cds_two_line_urcs(sim: ModemSim, make: Any) -> None:
    h = await make()
    direct = build_deliver(CALLER, "routed directly")
    sim.deliver(direct, route="cmt")
    report = build_status_report(0, CALLER)
    sim.status_report(report)  # as AT+CNMI asked: ds=1, +CDS
    await h.until(lambda: h.sms == [direct] and h.reports == [report])
    # Inside a reply, and a +CDS without the SMSC field (some modems): "00" prepended.
    sim.cds_with_smsc = False
    late = build_status_report(1, CALLER, status=0x46)
    sim.status_report(late, route="cds", mid_reply_of="AT+CMGS")
    pdu, length = submit()
    assert await h.modem.send_pdu(pdu, length) == 0
    smsc_digits = bytes.fromhex(late)[0]
    await h.until(lambda: len(h.reports) == 2)
    assert h.reports[1] == "00" + late[2 + 2 * smsc_digits :]
    assert not sim.storage


async def test_on_sms_raising_leaves_the_message_on_the_sim(
    sim: ModemSim, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make(health_interval=0.4)
    h.fail_sms = True
    incoming = build_deliver(CALLER, "please keep me")
    index = sim.deliver(incoming)
    await h.until(lambda: h.sms_attempts >= 1)
    await asyncio.sleep(0.1)
    assert index in sim.storage
    assert f"AT+CMGD={index}" not in sim.commands
    assert any("on_sms failed" in r.getMessage() for r in caplog.records)
    assert h.modem.ready.is_set()
    h.fail_sms = False  # the store is back: the next sweep (after a health poll) takes it
    await h.until(lambda: h.sms == [incoming] and not sim.storage)


async def test_slow_cmgs_answer_and_the_loop_never_blocks(sim: ModemSim, make: Any) -> None:
    h = await make(command_timeout=0.5, send_timeout=4.0)
    sim.cmgs_delay = 2.0
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            now = loop.time()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = loop.time()
    pdu, length = submit()
    try:
        assert await h.modem.send_pdu(pdu, length) == 0
    finally:
        ticking.cancel()
    elapsed = loop.time() - started
    assert 2.0 <= elapsed < 3.0
    assert len(gaps) > 120
    assert max(gaps) < 0.1, max(gaps)


@pytest.mark.parametrize(
    ("code", "permanent"), [(500, False), (38, False), (331, False), (304, True)]
)
async def test_cms_errors_raise_command_failed(
    sim: ModemSim, make: Any, code: int, permanent: bool
) -> None:
    h = await make()
    sim.fail_next_cmgs(code)
    pdu, length = submit()
    with pytest.raises(CommandFailed) as failed:
        await h.modem.send_pdu(pdu, length)
    error = failed.value
    assert (error.kind, error.code, error.permanent) == ("cms", code, permanent)
    assert error.description == classify_cms(code)[1]
    assert not error.pdu_written  # an explicit refusal: nothing went out
    assert h.modem.ready.is_set()
    assert await h.modem.send_pdu(pdu, length) == 0


async def test_a_pdu_the_modem_rejects_is_permanent(sim: ModemSim, make: Any) -> None:
    h = await make()
    deliver = build_deliver(CALLER, "not a SUBMIT")  # the sim answers +CMS ERROR: 304
    with pytest.raises(CommandFailed) as failed:
        await h.modem.send_pdu(deliver, tpdu_length(deliver))
    assert failed.value.code == 304 and failed.value.permanent


async def test_never_answered_command_times_out_and_the_modem_is_reset(
    sim: ModemSim, make: Any
) -> None:
    h = await make(command_timeout=0.5)
    # The first health poll follows "ready" at once: let it finish, so the hang meets
    # the AT+CMGS and not the poll.
    await h.until(lambda: "AT+COPS?" in sim.commands)
    await asyncio.sleep(0.1)
    sim.hang_next()
    pdu, length = submit()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CommandTimeout) as timed_out:
        await h.modem.send_pdu(pdu, length)
    assert 0.45 <= loop.time() - started < 1.5
    assert not timed_out.value.pdu_written  # no prompt came: the PDU never left
    assert not h.modem.ready.is_set()
    with pytest.raises(ModemUnavailable):
        await h.modem.send_pdu(pdu, length)
    await h.ready(within=3.0)
    assert not sim.hung
    assert sim.commands.count("ATZ") == 2
    assert await h.modem.send_pdu(pdu, length) == 0


async def test_unplug_during_a_send_then_the_device_comes_back(sim: ModemSim, make: Any) -> None:
    h = await make()
    sim.cmgs_delay = 2.0
    pdu, length = submit()
    sending = asyncio.create_task(h.modem.send_pdu(pdu, length))
    await h.until(lambda: sim.commands[-1].startswith("AT+CMGS"))
    await asyncio.sleep(0.2)  # the PDU is written; the network is taking its time
    await sim.disappear()
    with pytest.raises((ModemUnavailable, CommandTimeout)) as lost:
        await asyncio.wait_for(sending, 2)
    assert lost.value.pdu_written  # it may have gone out: the caller must not resend blindly
    assert not h.modem.ready.is_set()
    with pytest.raises(ModemUnavailable):
        await h.modem.send_pdu(pdu, length)
    await asyncio.sleep(0.5)
    assert not h.modem.ready.is_set()
    sim.cmgs_delay = 0.05
    await sim.reappear()  # powered on again: echo on, SIM locked
    await h.ready(within=5.0)
    assert not sim.pin_locked and not sim.echo
    assert await h.modem.send_pdu(pdu, length) == 0
    assert len(sim.sent) == 1
    assert len(h.identities) == 2


async def test_a_send_cancelled_by_its_caller_resets_the_link(sim: ModemSim, make: Any) -> None:
    h = await make()
    sim.cmgs_delay = 1.0
    # Answers spaced out, so that each lands while the client waits for a later command.
    sim.set_delay(0.3, "ATZ")
    sim.set_delay(0.3, "ATE0")
    sim.set_delay(0.1, "AT+CGSN")
    pdu, length = submit()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(h.modem.send_pdu(pdu, length), 0.3)
    # The late "+CMGS: 0 / OK" comes after the reopen and puts answers out of step; the
    # AT+CGSN sync notices (no IMEI in its answer), drains, asks again: no second reset.
    await h.until(lambda: sim.commands.count("ATZ") == 2)
    await h.ready(within=5.0)
    after_reset = sim.commands[len(sim.commands) - sim.commands[::-1].index("ATZ") :]
    assert after_reset.count("AT+CGSN") >= 2
    sim.cmgs_delay = 0.05
    assert await h.modem.send_pdu(pdu, length) == 1
    await h.until(lambda: h.modem.health is not None)
    assert h.modem.health is not None and h.modem.health.signal == 17
    assert sim.commands.count("ATZ") == 2
    assert h.identities[-1].imei == "356938035643809"


async def test_device_missing_at_start(link: Path, make: Any) -> None:
    h = await make(wait_ready=False)
    await asyncio.sleep(0.3)
    assert not h.modem.ready.is_set()
    simulator = ModemSim(link, pin=PIN)
    await simulator.start()
    try:
        await h.ready(within=3.0)
    finally:
        await h.stop()
        await simulator.stop()


async def test_garbage_and_vendor_urcs_do_not_break_the_reader(sim: ModemSim, make: Any) -> None:
    h = await make(health_interval=0.3)
    sim.garbage(b"\xff\xfe\x00\x80\xc3(noise\xff\r\n\xff\xff\xff")
    sim.urc("^RSSI: 14")
    sim.ring()
    sim.urc("+CUSD: 0")
    sim.urc("^BOOT:12345,0,0,0,72")
    noisy = b"\r\n\xff\xfeline noise\x00\r\n^RSSI:12\r\nRING\r\n\xff"
    sim.inject_mid_reply(noisy, "AT+CMGS")
    sim.inject_mid_reply(b"\xff\xfe", "AT+CMGS", position="after_echo")
    pdu, length = submit()
    assert await h.modem.send_pdu(pdu, length) == 0
    sim.garbage(b"\xff\xff\xff")
    incoming = build_deliver(CALLER, "still listening?")
    sim.deliver(incoming)
    await h.until(lambda: h.sms == [incoming])
    sim.inject_mid_reply(b"\xff\x00\xfe", "AT+CSQ")
    count = len(h.healths)
    await h.until(lambda: len(h.healths) >= count + 1)
    assert h.healths[-1].signal == 17
    assert h.modem.ready.is_set()
    assert await h.modem.send_pdu(pdu, length) == 1


async def test_health_values_are_parsed(sim: ModemSim, make: Any) -> None:
    h = await make(health_interval=0.3)
    await h.until(lambda: len(h.healths) >= 1)
    assert h.healths[0] == ModemHealth(17, "home", "Sim Operator")
    sim.signal, sim.registration, sim.operator = 99, 5, "Roam Op"
    await h.until(lambda: h.healths[-1] == ModemHealth(None, "roaming", "Roam Op"))
    sim.signal, sim.registration = 3, 2
    await h.until(lambda: h.healths[-1] == ModemHealth(3, "searching", ""))
    assert h.modem.health == ModemHealth(3, "searching", "")


async def test_wrong_pin_is_never_tried_twice(
    sim: ModemSim, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callcatch.sms.modem")
    h = await make(wait_ready=False, pin=Secret("0000"))
    await h.until(lambda: sim.commands.count("AT+CPIN?") >= 3, within=4.0)
    assert not h.modem.ready.is_set()
    assert sim.commands.count('AT+CPIN="0000"') == 1
    assert sim.pin_attempts == 2
    assert "0000" not in caplog.text
    assert "refused the PIN" in caplog.text


async def test_sim_busy_after_the_pin_is_waited_for(link: Path, make: Any) -> None:
    simulator = ModemSim(link, pin=PIN, sim_busy_after_pin=0.8)
    await simulator.start()
    try:
        h = await make(wait_ready=False)
        await h.ready(within=5.0)
        assert simulator.commands.count("AT+CIMI") >= 2  # +CME ERROR: 14 (SIM busy) first
        assert h.modem.identity == ModemIdentity("356938035643809", "001010123456789")
    finally:
        await h.stop()
        await simulator.stop()


async def test_stopping_ends_run_promptly_even_mid_send(sim: ModemSim, make: Any) -> None:
    h = await make()
    sim.cmgs_delay = 5.0
    pdu, length = submit()
    sending = asyncio.create_task(h.modem.send_pdu(pdu, length))
    await h.until(lambda: sim.commands[-1].startswith("AT+CMGS"))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await h.stop()
    assert loop.time() - started < 1.0
    with pytest.raises(ModemError):
        await asyncio.wait_for(sending, 1)
    assert not h.modem.ready.is_set()


def test_classify_cms_table() -> None:
    temporary = [38, 331, 500, 42, 332, 314, 512, 530, 17, 41, 47, 22]
    permanent = [304, 21, 8, 1, 330, 96, 144, 195, 305]
    assert all(not classify_cms(c)[0] for c in temporary)
    assert all(classify_cms(c)[0] for c in permanent)
    assert classify_cms(38) == (False, "network out of order")
    assert classify_cms(330) == (True, "SMSC address unknown")
    assert classify_cms(600)[1] == "manufacturer specific error"
    assert classify_cme(16) == (True, "incorrect password")
    assert not classify_cme(30)[0]
