"""A GSM modem simulator behind a pseudo-terminal, as unkind as real modems.

The simulator sits exactly where a USB modem's ``/dev/ttyUSB2`` would be: it owns the master
side of a pty (``os.openpty()``, slave in raw mode) and keeps a symlink at ``link`` pointing
at the slave, like socat's ``link=``. It speaks 3GPP 27.005/27.007 AT in PDU mode, the way
real modems do it, including the unpleasant parts:

* echo of every command line until ``ATE0`` (and again after ``ATZ`` or a power cycle),
  ``+CME ERROR``/``+CMS ERROR`` shown as bare ``ERROR`` until ``AT+CMEE=1``;
* a SIM PIN that must be entered, three attempts, then PUK (the SIM is lost for the shop);
* URCs only after ``AT+CNMI`` asked for them, ``AT+CMGF=1`` refused (PDU-only modems);
* ``AT+CMGS`` answered after a delay, with a ``> `` prompt that has no line end.

Unkindness on demand: :meth:`ModemSim.set_delay`, :meth:`ModemSim.fail_next_cmgs`,
:meth:`ModemSim.hang_next` (silent until ``ATZ``), :meth:`ModemSim.disappear` /
:meth:`ModemSim.reappear` (USB unplug: master closed, link removed; a new pty later, and the
modem has power-cycled), :meth:`ModemSim.inject_mid_reply` (a URC between the lines of the next
reply, before its final result), :meth:`ModemSim.garbage`, :meth:`ModemSim.urc`.

Inbound: :meth:`ModemSim.deliver` (stored + ``+CMTI``, or direct 2-line ``+CMT``) and
:meth:`ModemSim.status_report` (2-line ``+CDS`` or stored + ``+CDSI``). PDU builders for
SMS-DELIVER (single, multipart with UDH; GSM-7 and UCS-2) and SMS-STATUS-REPORT are below.

As a subprocess: ``python -m tests.modem_sim --link /tmp/x/ttyGSM0 --control 127.0.0.1:0``
prints ``control HOST:PORT`` once listening; the control socket takes one command a line
(``help`` lists them) and answers ``OK [data]`` or ``ERR reason``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
import tty
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gsmmodem.pdu import decodeGsm7, encodeGsm7

log = logging.getLogger(__name__)

CTRL_Z = 0x1A
ESC = 0x1B
DEFAULT_SMSC = "+15550000000"

_CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    14: "SIM busy",
    16: "incorrect password",
    100: "unknown",
}
_CMS_TEXT = {
    38: "network out of order",
    304: "invalid PDU mode parameter",
    311: "SIM PIN required",
    314: "SIM busy",
    321: "invalid memory index",
    331: "no network service",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}


@dataclass(frozen=True)
class SentPdu:
    """One PDU the simulator accepted from ``AT+CMGS``."""

    at: float  # time.monotonic() when accepted
    pdu: str  # upper-case hex, SMSC field included, exactly as written by the client
    mr: int
    tpdu_length: int


@dataclass
class StoredSms:
    stat: int  # 0 received unread, 1 received read, 2 stored unsent, 3 stored sent
    pdu: str


@dataclass
class _Injection:
    data: bytes
    prefix: str | None
    position: str  # "after_echo" or "before_final"


class ModemSim:
    """The simulated modem. Create, ``await start()``, drive it, ``await stop()``."""

    def __init__(
        self,
        link: Path | str,
        *,
        pin: str | None = "1234",
        imei: str = "356938035643809",
        imsi: str = "001010123456789",
        text_mode_error: bool = True,
        cmgs_delay: float = 0.05,
        signal: int = 17,
        registration: int = 1,
        operator: str = "Sim Operator",
        smsc: str = DEFAULT_SMSC,
        capacity: int = 30,
        sim_busy_after_pin: float = 0.0,
        cds_with_smsc: bool = True,
    ) -> None:
        self.link = Path(link)
        self.pin = pin
        self.imei = imei
        self.imsi = imsi
        self.text_mode_error = text_mode_error
        self.cmgs_delay = cmgs_delay
        self.signal = signal
        self.registration = registration
        self.operator = operator
        self.smsc = smsc
        self.capacity = capacity
        self.sim_busy_after_pin = sim_busy_after_pin
        self.cds_with_smsc = cds_with_smsc
        # What tests inspect.
        self.sent: list[SentPdu] = []
        self.storage: dict[int, StoredSms] = {}
        self.commands: list[str] = []
        self.pin_attempts = 3
        self.opened_ptys = 0
        # Modem state (power-on values in _power_on).
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi = (0, 0, 0, 0, 0)
        self.pin_locked = pin is not None
        self.puk_required = False
        self._sim_busy_until = 0.0
        self._mr = 0
        self._delays: list[tuple[str | None, float]] = []
        self._cmgs_errors: list[int] = []
        self._hang_pending = False
        self.hung = False
        self._injections: list[_Injection] = []
        # The pty.
        self._master: int | None = None
        self._slave: int | None = None
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._writer_on = False
        self._data = asyncio.Event()
        self._sent_changed = asyncio.Event()
        self._serve_task: asyncio.Task[None] | None = None
        self.present = False

    # ---- life -------------------------------------------------------------------------

    async def start(self) -> None:
        self._open_pty()

    async def stop(self) -> None:
        await self.disappear()

    @property
    def slave_path(self) -> str | None:
        return os.ttyname(self._slave) if self._slave is not None else None

    def _power_on(self) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi = (0, 0, 0, 0, 0)
        self.pin_locked = self.pin is not None and not self.puk_required
        self.hung = False
        self._hang_pending = False
        self._sim_busy_until = 0.0

    def _open_pty(self) -> None:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._inbuf.clear()
        self._outbuf.clear()
        self._power_on()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link)
        loop.add_reader(master, self._on_readable)
        self._serve_task = asyncio.create_task(self._serve())
        self.present = True
        self.opened_ptys += 1
        log.debug("sim: pty %s at %s", os.ttyname(slave), self.link)

    async def disappear(self) -> None:
        """The device is unplugged: the master is closed and the link removed."""
        if self._serve_task is not None:
            self._serve_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
            self._serve_task = None
        loop = asyncio.get_running_loop()
        if self._master is not None:
            loop.remove_reader(self._master)
            if self._writer_on:
                loop.remove_writer(self._master)
                self._writer_on = False
            os.close(self._master)
            self._master = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        with contextlib.suppress(FileNotFoundError):
            if self.link.is_symlink():
                self.link.unlink()
        self._outbuf.clear()
        self._inbuf.clear()
        self.present = False

    async def reappear(self) -> None:
        """Plugged back in: a new pty at the same link path, the modem freshly powered on."""
        if not self.present:
            self._open_pty()

    # ---- unkindness ---------------------------------------------------------------------

    def set_delay(self, seconds: float, prefix: str | None = None) -> None:
        """Wait ``seconds`` before answering every command (or those starting ``prefix``);
        0 removes the delay for that prefix."""
        key = prefix.upper() if prefix else None
        self._delays = [(p, s) for p, s in self._delays if p != key]
        if seconds > 0:
            self._delays.append((key, seconds))

    def fail_next_cmgs(self, code: int, count: int = 1) -> None:
        self._cmgs_errors.extend([code] * count)

    def hang_next(self) -> None:
        """Never answer the next command, nor any after it, until ``ATZ`` (or a replug)."""
        self._hang_pending = True

    def inject_mid_reply(
        self, data: bytes | str, prefix: str | None = None, position: str = "before_final"
    ) -> None:
        """Put ``data`` inside the reply to the next command (starting ``prefix``):
        ``before_final`` between the information lines and OK, ``after_echo`` first."""
        raw = data.encode() if isinstance(data, str) else data
        self._injections.append(_Injection(raw, prefix.upper() if prefix else None, position))

    def garbage(self, data: bytes = b"\xff\xfe\x00\x80\xc3(noise\xff") -> None:
        self._send(data)

    def urc(self, line: str, mid_reply_of: str | None = None) -> None:
        self._emit(f"\r\n{line}\r\n".encode(), mid_reply_of)

    def ring(self) -> None:
        self.urc("RING")

    def deliver(
        self, pdu_hex: str, *, route: str = "auto", mid_reply_of: str | None = None
    ) -> int | None:
        """An SMS arrives. ``route``: ``auto`` (as AT+CNMI asked: mt=1 store and ``+CMTI``,
        mt=2 direct ``+CMT``, mt=0 store silently), or ``cmti``, ``cmt``, ``store``.
        Returns the storage index (None for ``+CMT``)."""
        pdu_hex = pdu_hex.upper()
        if route == "auto":
            route = {1: "cmti", 2: "cmt", 3: "cmt"}.get(self.cnmi[1], "store")
        if route == "cmt":
            self._emit(
                f"\r\n+CMT: ,{tpdu_length(pdu_hex)}\r\n{pdu_hex}\r\n".encode(), mid_reply_of
            )
            return None
        index = self._store(pdu_hex, 0)
        if route == "cmti":
            self.urc(f'+CMTI: "SM",{index}', mid_reply_of)
        return index

    def status_report(
        self, pdu_hex: str, *, route: str = "auto", mid_reply_of: str | None = None
    ) -> int | None:
        """A status report arrives. ``route``: ``auto`` (AT+CNMI ds=1 ``+CDS``, ds=2 stored
        and ``+CDSI``, ds=0 dropped), ``cds``, ``cdsi``."""
        pdu_hex = pdu_hex.upper()
        if route == "auto":
            route = {1: "cds", 2: "cdsi"}.get(self.cnmi[3], "drop")
        if route == "cds":
            shown = pdu_hex if self.cds_with_smsc else _strip_smsc(pdu_hex)
            self._emit(f"\r\n+CDS: {tpdu_length(pdu_hex)}\r\n{shown}\r\n".encode(), mid_reply_of)
            return None
        if route == "cdsi":
            index = self._store(pdu_hex, 0)
            self.urc(f'+CDSI: "SM",{index}', mid_reply_of)
            return index
        return None

    async def wait_sent(self, count: int, within: float = 5.0) -> list[SentPdu]:
        """Wait until ``count`` PDUs have been accepted in all."""
        async with asyncio.timeout(within):
            while len(self.sent) < count:
                self._sent_changed.clear()
                await self._sent_changed.wait()
        return list(self.sent)

    # ---- bytes ----------------------------------------------------------------------------

    def _emit(self, data: bytes, mid_reply_of: str | None) -> None:
        if mid_reply_of is None:
            self._send(data)
        else:
            self.inject_mid_reply(data, mid_reply_of)

    def _send(self, data: bytes) -> None:
        if self._master is None:
            return
        self._outbuf += data
        if len(self._outbuf) > 65536:  # nobody reads: a real modem drops it too
            del self._outbuf[:-65536]
        self._flush()

    def _flush(self) -> None:
        if self._master is None:
            return
        while self._outbuf:
            try:
                n = os.write(self._master, self._outbuf)
            except BlockingIOError:
                break
            except OSError:
                self._outbuf.clear()
                break
            del self._outbuf[:n]
        loop = asyncio.get_running_loop()
        if self._outbuf and not self._writer_on:
            loop.add_writer(self._master, self._flush)
            self._writer_on = True
        elif not self._outbuf and self._writer_on:
            loop.remove_writer(self._master)
            self._writer_on = False

    def _on_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open (cannot happen while we hold ours)
            return
        self._inbuf += data
        self._data.set()

    async def _wait_data(self) -> None:
        self._data.clear()
        await self._data.wait()

    async def _read_command(self) -> str:
        while True:
            end = self._inbuf.find(b"\r")
            if end >= 0:
                raw = bytes(self._inbuf[:end])
                del self._inbuf[: end + 1]
                text = bytes(b for b in raw if 0x20 <= b < 0x7F).decode("ascii").strip()
                if text:
                    return text
                continue
            await self._wait_data()

    async def _read_pdu(self) -> tuple[bytes, int]:
        while True:
            for i, b in enumerate(self._inbuf):
                if b in (CTRL_Z, ESC):
                    text = bytes(self._inbuf[:i])
                    del self._inbuf[: i + 1]
                    return text, b
            await self._wait_data()

    # ---- commands -------------------------------------------------------------------------

    async def _serve(self) -> None:
        while True:
            line = await self._read_command()
            self.commands.append(line)
            if self._hang_pending:
                self._hang_pending = False
                self.hung = True
            if self.hung:
                if line.upper() not in ("ATZ", "ATZ0"):
                    continue
                self.hung = False
            if self.echo:
                self._send(line.encode() + b"\r")
            try:
                await self._handle(line)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sim: command %r failed", line)
                self._reply(line, [], "ERROR")

    def _delay_for(self, upper: str) -> float:
        return max((s for p, s in self._delays if p is None or upper.startswith(p)), default=0.0)

    def _take(self, upper: str, position: str) -> bytes:
        out = bytearray()
        keep = []
        for inj in self._injections:
            matches = inj.prefix is None or upper.startswith(inj.prefix)
            if matches and inj.position == position:
                out += inj.data
            else:
                keep.append(inj)
        self._injections = keep
        return bytes(out)

    def _reply(self, line: str, info: Sequence[str], final: str) -> None:
        upper = line.upper()
        out = bytearray(self._take(upper, "after_echo"))
        if info:
            out += b"\r\n" + "\r\n".join(info).encode() + b"\r\n"
        out += self._take(upper, "before_final")
        out += b"\r\n" + final.encode() + b"\r\n"
        self._send(bytes(out))

    def _cme(self, code: int) -> str:
        if self.cmee == 0:
            return "ERROR"
        if self.cmee == 2:
            return f"+CME ERROR: {_CME_TEXT.get(code, 'unknown')}"
        return f"+CME ERROR: {code}"

    def _cms(self, code: int) -> str:
        if self.cmee == 0:
            return "ERROR"
        if self.cmee == 2:
            return f"+CMS ERROR: {_CMS_TEXT.get(code, 'unknown error')}"
        return f"+CMS ERROR: {code}"

    def _sim_problem(self) -> int | None:
        """The +CMS error an SMS command gets now, if the SIM is not usable."""
        if self.pin_locked or self.puk_required:
            return 311
        if time.monotonic() < self._sim_busy_until:
            return 314
        return None

    def _store(self, pdu_hex: str, stat: int) -> int:
        for index in range(1, self.capacity + 1):
            if index not in self.storage:
                self.storage[index] = StoredSms(stat, pdu_hex)
                return index
        raise RuntimeError("SIM storage full")

    async def _handle(self, line: str) -> None:
        upper = line.upper()
        delay = self._delay_for(upper)
        if delay:
            await asyncio.sleep(delay)
        if not upper.startswith("AT"):
            self._reply(line, [], "ERROR")
            return
        body = line[2:]
        ubody = upper[2:]
        m = re.match(r"^([+^][A-Z]+|[A-Z]\d*)(\?|=\?|=)?(.*)$", ubody)
        if ubody == "":
            self._reply(line, [], "OK")
            return
        if m is None:
            self._reply(line, [], "ERROR")
            return
        name, op, _ = m.groups()
        args = body[len(name) + len(op or "") :]
        handler = _HANDLERS.get((name, op or ""))
        if handler is None:
            self._reply(line, [], "ERROR")
            return
        await handler(self, line, args)

    async def _at_z(self, line: str, args: str) -> None:
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cnmi = (0, 0, 0, 0, 0)
        self._reply(line, [], "OK")

    async def _at_e0(self, line: str, args: str) -> None:
        self.echo = False
        self._reply(line, [], "OK")

    async def _at_e1(self, line: str, args: str) -> None:
        self.echo = True
        self._reply(line, [], "OK")

    async def _at_i(self, line: str, args: str) -> None:
        self._reply(line, ["Simulated", "GSM MODEM", "Revision: callcatch-sim 1"], "OK")

    async def _cmee_set(self, line: str, args: str) -> None:
        if args.strip() not in ("0", "1", "2"):
            self._reply(line, [], "ERROR")
            return
        self.cmee = int(args)
        self._reply(line, [], "OK")

    async def _cpin_query(self, line: str, args: str) -> None:
        if self.puk_required:
            state = "SIM PUK"
        elif self.pin_locked:
            state = "SIM PIN"
        else:
            state = "READY"
        self._reply(line, [f"+CPIN: {state}"], "OK")

    async def _cpin_set(self, line: str, args: str) -> None:
        given = args.split(",")[0].strip().strip('"')
        if self.puk_required:
            self._reply(line, [], self._cme(12))
        elif not self.pin_locked:
            self._reply(line, [], self._cme(3))
        elif given == self.pin:
            self.pin_locked = False
            self.pin_attempts = 3
            self._sim_busy_until = time.monotonic() + self.sim_busy_after_pin
            self._reply(line, [], "OK")
        else:
            self.pin_attempts -= 1
            if self.pin_attempts <= 0:
                self.puk_required = True
                self.pin_locked = False
            self._reply(line, [], self._cme(16))

    async def _cmgf_set(self, line: str, args: str) -> None:
        mode = args.strip()
        if mode == "0" or (mode == "1" and not self.text_mode_error):
            self.cmgf = int(mode)
            self._reply(line, [], "OK")
        else:
            self._reply(line, [], "ERROR")

    async def _cmgf_query(self, line: str, args: str) -> None:
        self._reply(line, [f"+CMGF: {self.cmgf}"], "OK")

    async def _cnmi_set(self, line: str, args: str) -> None:
        try:
            values = [int(v) if v.strip() else 0 for v in args.split(",")]
        except ValueError:
            self._reply(line, [], "ERROR")
            return
        values += [0] * (5 - len(values))
        limits = (3, 3, 3, 2, 2)
        if len(values) != 5 or any(not 0 <= v <= hi for v, hi in zip(values, limits, strict=True)):
            self._reply(line, [], self._cms(303))
            return
        self.cnmi = (values[0], values[1], values[2], values[3], values[4])
        self._reply(line, [], "OK")

    async def _cnmi_query(self, line: str, args: str) -> None:
        self._reply(line, ["+CNMI: " + ",".join(map(str, self.cnmi))], "OK")

    async def _csca_query(self, line: str, args: str) -> None:
        self._reply(line, [f'+CSCA: "{self.smsc}",145'], "OK")

    async def _csca_set(self, line: str, args: str) -> None:
        m = re.match(r'^"(\+?\d+)"(,\d+)?$', args.strip())
        if m is None:
            self._reply(line, [], self._cms(304))
            return
        self.smsc = m.group(1)
        self._reply(line, [], "OK")

    async def _cgsn(self, line: str, args: str) -> None:
        self._reply(line, [self.imei], "OK")

    async def _cimi(self, line: str, args: str) -> None:
        if self.pin_locked or self.puk_required:
            self._reply(line, [], self._cme(11))
        elif time.monotonic() < self._sim_busy_until:
            self._reply(line, [], self._cme(14))
        else:
            self._reply(line, [self.imsi], "OK")

    async def _csq(self, line: str, args: str) -> None:
        self._reply(line, [f"+CSQ: {self.signal},99"], "OK")

    async def _creg_query(self, line: str, args: str) -> None:
        self._reply(line, [f"+CREG: 0,{self.registration}"], "OK")

    async def _cops_query(self, line: str, args: str) -> None:
        if self.registration in (1, 5):
            self._reply(line, [f'+COPS: 0,0,"{self.operator}",7'], "OK")
        else:
            self._reply(line, ["+COPS: 0"], "OK")

    async def _cpms_query(self, line: str, args: str) -> None:
        n, cap = len(self.storage), self.capacity
        self._reply(line, [f'+CPMS: "SM",{n},{cap},"SM",{n},{cap},"SM",{n},{cap}'], "OK")

    async def _cpms_set(self, line: str, args: str) -> None:
        mems = [m.strip().strip('"').upper() for m in args.split(",") if m.strip()]
        if not mems or any(m != "SM" for m in mems):
            self._reply(line, [], self._cms(302))
            return
        n, cap = len(self.storage), self.capacity
        self._reply(line, [f"+CPMS: {n},{cap},{n},{cap},{n},{cap}"], "OK")

    async def _cmgr(self, line: str, args: str) -> None:
        problem = self._sim_problem()
        if problem is not None:
            self._reply(line, [], self._cms(problem))
            return
        try:
            index = int(args.strip())
        except ValueError:
            self._reply(line, [], "ERROR")
            return
        stored = self.storage.get(index)
        if stored is None:
            self._reply(line, [], self._cms(321))
            return
        info = [f"+CMGR: {stored.stat},,{tpdu_length(stored.pdu)}", stored.pdu]
        if stored.stat == 0:
            stored.stat = 1
        self._reply(line, info, "OK")

    async def _cmgd(self, line: str, args: str) -> None:
        problem = self._sim_problem()
        if problem is not None:
            self._reply(line, [], self._cms(problem))
            return
        try:
            parts = [int(p) for p in args.split(",")]
        except ValueError:
            self._reply(line, [], "ERROR")
            return
        index, flag = parts[0], (parts[1] if len(parts) > 1 else 0)
        if flag == 0:
            self.storage.pop(index, None)
        else:
            doomed = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}.get(flag, set())
            for i in [i for i, s in self.storage.items() if s.stat in doomed]:
                del self.storage[i]
        self._reply(line, [], "OK")

    async def _cmgl(self, line: str, args: str) -> None:
        problem = self._sim_problem()
        if problem is not None:
            self._reply(line, [], self._cms(problem))
            return
        try:
            stat = int(args.strip())
        except ValueError:
            self._reply(line, [], self._cms(304))
            return
        info: list[str] = []
        for index in sorted(self.storage):
            stored = self.storage[index]
            if stat == 4 or stored.stat == stat:
                info += [f"+CMGL: {index},{stored.stat},,{tpdu_length(stored.pdu)}", stored.pdu]
                if stored.stat == 0:
                    stored.stat = 1
        self._reply(line, info, "OK")

    async def _cnma(self, line: str, args: str) -> None:
        self._reply(line, [], self._cms(340))

    async def _cmgs(self, line: str, args: str) -> None:
        problem = self._sim_problem()
        if problem is not None:
            self._reply(line, [], self._cms(problem))
            return
        if self.cmgf != 0:
            self._reply(line, [], "ERROR")
            return
        try:
            length = int(args.strip())
        except ValueError:
            self._reply(line, [], "ERROR")
            return
        self._send(b"\r\n> ")
        text, end = await self._read_pdu()
        if self.echo:
            self._send(text)
        if end == ESC:
            self._reply(line, [], "OK")
            return
        pdu = text.decode("ascii", errors="replace").strip()
        if not _pdu_matches(pdu, length):
            self._reply(line, [], self._cms(304))
            return
        await asyncio.sleep(self.cmgs_delay)
        if self._cmgs_errors:
            self._reply(line, [], self._cms(self._cmgs_errors.pop(0)))
            return
        mr = self._mr
        self._mr = (self._mr + 1) % 256
        self.sent.append(SentPdu(time.monotonic(), pdu.upper(), mr, length))
        self._sent_changed.set()
        self._reply(line, [f"+CMGS: {mr}"], "OK")


_HANDLERS = {
    ("Z", ""): ModemSim._at_z,
    ("Z0", ""): ModemSim._at_z,
    ("E0", ""): ModemSim._at_e0,
    ("E", ""): ModemSim._at_e0,
    ("E1", ""): ModemSim._at_e1,
    ("I", ""): ModemSim._at_i,
    ("+CMEE", "="): ModemSim._cmee_set,
    ("+CPIN", "?"): ModemSim._cpin_query,
    ("+CPIN", "="): ModemSim._cpin_set,
    ("+CMGF", "="): ModemSim._cmgf_set,
    ("+CMGF", "?"): ModemSim._cmgf_query,
    ("+CNMI", "="): ModemSim._cnmi_set,
    ("+CNMI", "?"): ModemSim._cnmi_query,
    ("+CSCA", "?"): ModemSim._csca_query,
    ("+CSCA", "="): ModemSim._csca_set,
    ("+CGSN", ""): ModemSim._cgsn,
    ("+CIMI", ""): ModemSim._cimi,
    ("+CSQ", ""): ModemSim._csq,
    ("+CREG", "?"): ModemSim._creg_query,
    ("+COPS", "?"): ModemSim._cops_query,
    ("+CPMS", "?"): ModemSim._cpms_query,
    ("+CPMS", "="): ModemSim._cpms_set,
    ("+CMGR", "="): ModemSim._cmgr,
    ("+CMGD", "="): ModemSim._cmgd,
    ("+CMGL", "="): ModemSim._cmgl,
    ("+CNMA", ""): ModemSim._cnma,
    ("+CMGS", "="): ModemSim._cmgs,
}


def _pdu_matches(pdu: str, length: int) -> bool:
    """The PDU is hex, an SMS-SUBMIT, and its TPDU (after the SMSC field) is ``length``."""
    try:
        raw = bytes.fromhex(pdu)
    except ValueError:
        return False
    if not raw or len(raw) < raw[0] + 2:
        return False
    tpdu = raw[1 + raw[0] :]
    return len(tpdu) == length and tpdu[0] & 0x03 == 0x01


def tpdu_length(pdu_hex: str) -> int:
    """The TPDU length of a PDU that starts with its SMSC field (as AT+CMGS and +CMT count)."""
    raw = bytes.fromhex(pdu_hex)
    return len(raw) - 1 - raw[0]


def _strip_smsc(pdu_hex: str) -> str:
    raw = bytes.fromhex(pdu_hex)
    return raw[1 + raw[0] :].hex().upper()


# ---- PDU builders (SMS-DELIVER and SMS-STATUS-REPORT; 3GPP 23.040) ---------------------


def encode_smsc(number: str) -> bytes:
    """The SMSC field of a PDU: length of what follows in octets, TOA, semi-octets."""
    if not number:
        return b"\x00"
    digits = number.lstrip("+")
    toa = 0x91 if number.startswith("+") else 0x81
    body = bytes([toa]) + _semi_octets(digits)
    return bytes([len(body)]) + body


def encode_address(address: str) -> bytes:
    """A TP address (originator or recipient): length in digits, TOA, semi-octets;
    alphanumeric senders (``"SHOP"``) as packed GSM-7 with TOA 0xD0."""
    digits = address.lstrip("+")
    if digits.isdigit():
        toa = 0x91 if address.startswith("+") else 0x81
        return bytes([len(digits), toa]) + _semi_octets(digits)
    septets = gsm7_septets(address)
    packed = pack_septets(septets)
    return bytes([(len(septets) * 7 + 3) // 4, 0xD0]) + packed


def _semi_octets(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "F"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def encode_timestamp(when: datetime) -> bytes:
    """TP-SCTS: seven semi-octet fields, the last the UTC offset in quarter hours."""
    offset = when.utcoffset() or timedelta(0)
    quarters = int(offset.total_seconds() // 900)
    fields = [when.year % 100, when.month, when.day, when.hour, when.minute, when.second]
    out = bytearray(((v % 10) << 4) | (v // 10) for v in fields)
    q = abs(quarters)
    tz = ((q % 10) << 4) | (q // 10)
    if quarters < 0:
        tz |= 0x08
    out.append(tz)
    return bytes(out)


def gsm7_septets(text: str) -> list[int]:
    """GSM 03.38 default alphabet (escape pairs for the extension table); ValueError if not."""
    return list(encodeGsm7(text))


def pack_septets(septets: Sequence[int], fill_bits: int = 0) -> bytes:
    """Pack septets LSB first, after ``fill_bits`` zero bits (to align after a UDH)."""
    value = 0
    nbits = fill_bits
    for s in septets:
        value |= (s & 0x7F) << nbits
        nbits += 7
    return value.to_bytes((nbits + 7) // 8, "little")


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> list[int]:
    value = int.from_bytes(data, "little") >> fill_bits
    return [(value >> (7 * i)) & 0x7F for i in range(count)]


def _gsm7_fits(text: str) -> bool:
    try:
        gsm7_septets(text)
    except ValueError:
        return False
    return True


def build_deliver(
    sender: str,
    text: str,
    *,
    smsc: str = DEFAULT_SMSC,
    when: datetime | None = None,
    ucs2: bool | None = None,
    concat: tuple[int, int, int] | None = None,
) -> str:
    """One SMS-DELIVER PDU (SMSC field included) as upper-case hex.
    ``concat`` = (reference, total parts, this part's number) adds the 8-bit
    concatenation UDH. ``ucs2`` None chooses UCS-2 only when GSM-7 cannot carry the text."""
    when = when or datetime(2026, 3, 2, 14, 5, 9, tzinfo=UTC)
    if ucs2 is None:
        ucs2 = not _gsm7_fits(text)
    udh = b""
    if concat is not None:
        ref, total, number = concat
        udh = bytes([5, 0x00, 3, ref & 0xFF, total, number])
    first = 0x04 | (0x40 if udh else 0)  # SMS-DELIVER, no more messages waiting
    tpdu = bytearray([first]) + encode_address(sender) + bytes([0x00, 0x08 if ucs2 else 0x00])
    tpdu += encode_timestamp(when)
    if ucs2:
        body = text.encode("utf-16-be")
        tpdu += bytes([len(udh) + len(body)]) + udh + body
    else:
        septets = gsm7_septets(text)
        fill = (7 - (len(udh) * 8) % 7) % 7 if udh else 0
        udl = (len(udh) * 8 + fill) // 7 + len(septets)
        tpdu += bytes([udl]) + udh + pack_septets(septets, fill)
    return (encode_smsc(smsc) + bytes(tpdu)).hex().upper()


def build_deliver_parts(
    sender: str, text: str, *, reference: int = 0x42, **kwargs: object
) -> list[str]:
    """The PDUs a phone would send for ``text``: one when it fits (160 GSM-7 septets,
    70 UCS-2 units), else parts of 153 septets / 67 units with concatenation UDH."""
    if _gsm7_fits(text):
        if len(gsm7_septets(text)) <= 160:
            return [build_deliver(sender, text, **kwargs)]  # type: ignore[arg-type]
        chunks, current = [], ""
        for ch in text:
            if len(gsm7_septets(current + ch)) > 153:
                chunks.append(current)
                current = ""
            current += ch
        chunks.append(current)
        ucs2 = False
    else:
        units = len(text.encode("utf-16-be")) // 2
        if units <= 70:
            return [build_deliver(sender, text, ucs2=True, **kwargs)]  # type: ignore[arg-type]
        chunks, current = [], ""
        for ch in text:
            if len((current + ch).encode("utf-16-be")) // 2 > 67:
                chunks.append(current)
                current = ""
            current += ch
        chunks.append(current)
        ucs2 = True
    total = len(chunks)
    return [
        build_deliver(sender, chunk, ucs2=ucs2, concat=(reference, total, i + 1), **kwargs)  # type: ignore[arg-type]
        for i, chunk in enumerate(chunks)
    ]


def build_status_report(
    mr: int,
    recipient: str,
    *,
    status: int = 0x00,
    smsc: str = DEFAULT_SMSC,
    submitted: datetime | None = None,
    done: datetime | None = None,
) -> str:
    """An SMS-STATUS-REPORT PDU for message reference ``mr``. ``status`` (TP-ST): 0x00
    delivered, 0x20-0x3F still trying, 0x40-0x7F failed permanently (0x41 incompatible
    destination, 0x46 expired, ...)."""
    submitted = submitted or datetime(2026, 3, 2, 14, 5, 9, tzinfo=UTC)
    done = done or submitted + timedelta(seconds=4)
    tpdu = bytearray([0x06, mr & 0xFF]) + encode_address(recipient)
    tpdu += encode_timestamp(submitted) + encode_timestamp(done) + bytes([status & 0xFF])
    return (encode_smsc(smsc) + bytes(tpdu)).hex().upper()


def decode_deliver(pdu_hex: str) -> dict[str, object]:
    """A small decoder for the builders' self-tests: sender, text, concat (ref, total, n)."""
    raw = bytes.fromhex(pdu_hex)
    i = 1 + raw[0]
    first = raw[i]
    i += 1
    digits, toa = raw[i], raw[i + 1]
    n = (digits + 1) // 2
    addr = raw[i + 2 : i + 2 + n]
    i += 2 + n
    if toa & 0x70 == 0x50:
        sender = "".join(chr(c) for c in unpack_septets(addr, digits * 4 // 7))
    else:
        semi = "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in addr)[:digits]
        sender = ("+" if toa == 0x91 else "") + semi
    dcs = raw[i + 1]
    i += 2 + 7
    udl = raw[i]
    ud = raw[i + 1 :]
    concat = None
    header_len = 0
    if first & 0x40:
        header_len = ud[0] + 1
        if ud[1] == 0x00:
            concat = (ud[3], ud[4], ud[5])
    if dcs & 0x0C == 0x08:
        text = ud[header_len:udl].decode("utf-16-be")
    else:
        fill = (7 - (header_len * 8) % 7) % 7 if header_len else 0
        skip = (header_len * 8 + fill) // 7
        septets = unpack_septets(ud[header_len:], udl - skip, fill)
        text = decodeGsm7(bytearray(septets))
    return {"sender": sender, "text": text, "concat": concat}


# ---- subprocess mode and its control socket --------------------------------------------

_CONTROL_HELP = (
    "deliver HEX [auto|cmti|cmt|store] | status HEX [auto|cds|cdsi] | fail_cmgs CODE [N] | "
    "delay SECONDS [PREFIX] | cmgs_delay SECONDS | hang | disappear | reappear | "
    "garbage HEX | urc TEXT | ring | mid TEXT [PREFIX] | sent | storage | state | quit"
)


async def _control(sim: ModemSim, words: list[str], quit_event: asyncio.Event) -> str:
    cmd, args = words[0].lower(), words[1:]
    if cmd == "deliver":
        return f"OK {sim.deliver(args[0], route=args[1] if len(args) > 1 else 'auto')}"
    if cmd == "status":
        return f"OK {sim.status_report(args[0], route=args[1] if len(args) > 1 else 'auto')}"
    if cmd == "fail_cmgs":
        sim.fail_next_cmgs(int(args[0]), int(args[1]) if len(args) > 1 else 1)
    elif cmd == "delay":
        sim.set_delay(float(args[0]), args[1] if len(args) > 1 else None)
    elif cmd == "cmgs_delay":
        sim.cmgs_delay = float(args[0])
    elif cmd == "hang":
        sim.hang_next()
    elif cmd == "disappear":
        await sim.disappear()
    elif cmd == "reappear":
        await sim.reappear()
    elif cmd == "garbage":
        sim.garbage(bytes.fromhex(args[0]) if args else b"\xff\xfe\x00garbage\xff")
    elif cmd == "urc":
        sim.urc(" ".join(args))
    elif cmd == "ring":
        sim.ring()
    elif cmd == "mid":
        sim.inject_mid_reply(f"\r\n{args[0]}\r\n", args[1] if len(args) > 1 else None)
    elif cmd == "sent":
        return "OK " + json.dumps([asdict(s) for s in sim.sent])
    elif cmd == "storage":
        return "OK " + json.dumps({i: asdict(s) for i, s in sim.storage.items()})
    elif cmd == "state":
        state = {
            "echo": sim.echo,
            "cmee": sim.cmee,
            "cmgf": sim.cmgf,
            "cnmi": sim.cnmi,
            "pin_locked": sim.pin_locked,
            "pin_attempts": sim.pin_attempts,
            "hung": sim.hung,
            "present": sim.present,
        }
        return "OK " + json.dumps(state)
    elif cmd == "quit":
        quit_event.set()
    elif cmd == "help":
        return "OK " + _CONTROL_HELP
    else:
        return "ERR unknown command (try help)"
    return "OK"


async def serve_control(
    sim: ModemSim, host: str, port: int, quit_event: asyncio.Event
) -> asyncio.Server:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                words = line.decode("utf-8", errors="replace").split()
                if not words:
                    continue
                try:
                    answer = await _control(sim, words, quit_event)
                except (IndexError, ValueError, RuntimeError) as exc:
                    answer = f"ERR {exc}"
                writer.write(answer.encode() + b"\n")
                await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(client, host, port)


async def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="GSM modem simulator behind a pty")
    parser.add_argument("--link", required=True, help="symlink to maintain at the pty slave")
    parser.add_argument("--control", default="127.0.0.1:0", help="HOST:PORT, loopback")
    parser.add_argument("--pin", default="1234", help="SIM PIN ('' for none)")
    parser.add_argument("--cmgs-delay", type=float, default=0.05)
    parser.add_argument("--allow-text-mode", action="store_true")
    args = parser.parse_args(argv)
    host, _, port = args.control.rpartition(":")
    sim = ModemSim(
        args.link,
        pin=args.pin or None,
        cmgs_delay=args.cmgs_delay,
        text_mode_error=not args.allow_text_mode,
    )
    await sim.start()
    quit_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, quit_event.set)
    server = await serve_control(sim, host or "127.0.0.1", int(port), quit_event)
    bound = server.sockets[0].getsockname()
    print(f"control {bound[0]}:{bound[1]}", flush=True)
    try:
        await quit_event.wait()
    finally:
        server.close()
        await sim.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(_main())

__all__ = [
    "CTRL_Z",
    "DEFAULT_SMSC",
    "ESC",
    "ModemSim",
    "SentPdu",
    "StoredSms",
    "build_deliver",
    "build_deliver_parts",
    "build_status_report",
    "decode_deliver",
    "encode_address",
    "encode_smsc",
    "encode_timestamp",
    "pack_septets",
    "serve_control",
    "tpdu_length",
    "unpack_septets",
]
