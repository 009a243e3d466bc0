"""The GSM modem transport: AT commands in PDU mode over a serial device, on the event loop.

This module moves PDU hex strings in and out of one USB GSM modem. It knows nothing of what
the PDUs say (that is :mod:`callcatch.sms.pdu`'s job): it sends ``AT+CMGS``, returns the
message reference, and hands inbound SMS-DELIVER and SMS-STATUS-REPORT PDUs to callbacks.

Why not python-gsmmodem-new's ``GsmModem``: its I/O is a pyserial reader *thread* that
dies on an undecodable byte (it decodes strictly), it has no reconnect when the USB device
goes away and comes back, and its calls block the caller while they wait for the modem.
None of that fits a daemon whose event loop also watches the PBX. We use neither its modem
class nor pyserial: the device is opened with ``os.open`` and put into raw 8N1 at the
configured speed with ``termios`` (all pyserial would do for us here; it is not a declared
dependency and has no type stubs). The descriptor is non-blocking; reads come through
``loop.add_reader``, writes are attempted directly and finished with ``loop.add_writer``
on EAGAIN. Opening the device runs in a worker thread, bounded by ``command_timeout``.

The reader splits on CR or LF, drops empty lines, the echo of the command just sent, and
every byte that is not printable ASCII (an ``0xFF`` never kills it). The ``> `` prompt of
``AT+CMGS`` has no line end and is recognised in the unterminated remainder. Unsolicited
result codes are recognised first, before a line is given to the command waiting for its
reply, so a ``+CMTI`` between the lines of another reply is still seen; unknown URCs are
logged at DEBUG and ignored. One command is on the line at a time (an ``asyncio.Lock``);
every wait has a timeout.

Init sequence, on each (re)open: ESC (leaves a ``> `` prompt a previous run may have left
open), a short settle, the input queue flushed, then ``ATZ`` (``AT`` if refused), ``ATE0``,
``AT+CGSN`` (until it answers with an IMEI: a stale answer to a command cut short by the
reset puts every later answer out of step, see ``Modem._sync``), ``AT+CMEE=1``,
``AT+CPIN?`` and the PIN if the SIM asks for it, ``AT+CMGF=0``, ``AT+CNMI=2,1,0,1,0``
(fallbacks below), ``AT+CSCA`` when an SMSC is configured, ``AT+CIMI`` (``on_identity``),
``AT+CPMS?`` (which storage ``AT+CMGR`` reads), then ``AT+CMGL=4``: every stored
SMS-DELIVER goes to ``on_sms`` and is deleted after it returned, every stored status
report to ``on_status_report``. Then ``ready`` is set.
SIM-busy answers right after the PIN (``+CMS ERROR: 314``, ``+CME ERROR: 14``) are retried
for a few seconds.

Decisions:

* ``AT+CNMI=2,1,0,1,0``: new SMS are *stored* and announced with ``+CMTI`` (not routed
  directly), so a message survives a crash of this daemon between the modem and the store;
  status reports come directly as ``+CDS`` (27.005: ``<ds>=1``; ``<ds>=2`` would store them
  and announce ``+CDSI``, which is handled too). If the modem refuses, ``1,1,0,1,0`` then
  ``2,1,0,0,0`` are tried; if all fail, the periodic sweep still finds stored messages.
* ``+CNMA`` is never sent. We leave ``AT+CSMS`` at 0, where the modem acknowledges
  directly routed ``+CMT``/``+CDS`` itself (27.005 §3.4.4: ``+CNMA`` only for service 1).
  A ``+CMT`` only appears on a modem that ignores our ``<mt>=1``; if ``on_sms`` raises for
  one, that message is lost (logged as an error): it was never on the SIM.
* Inbound is at least once: an SMS is deleted from the SIM only after ``on_sms`` returned.
  If ``on_sms`` raises, the message stays and is offered again by the next sweep
  (``AT+CMGL=4`` after every health poll, and at every init). If the delete itself fails,
  the same PDU is offered again: the consumer must tolerate duplicates.
* ``+CMT``/``+CDS`` PDUs that arrive without the SMSC field (some modems omit it in
  ``+CDS``; the length given is the TPDU's) get an empty one (``00``) prepended, so every
  PDU handed on starts with its SMSC field.
* Reset: a command without a final answer in time raises :class:`CommandTimeout` and ends
  the link; the device is closed and reopened after a short backoff (under a second, then
  doubling to 30 s while reopening fails) and fully re-initialised, starting with ``ATZ``
  (which also wakes a modem that went silent). A wrong SIM PIN is never tried twice by the
  same :class:`Modem` (three wrong tries lock the SIM behind its PUK).
* ``send_pdu`` does not pace: the outbox sleeps ``pace_seconds`` between texts (the parts
  of one text go back to back). A send interrupted by a timeout or an unplug after the PDU
  was written may still have gone out: the exception then has ``pdu_written`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from callcatch.config import ModemConfig
from callcatch.tasks import Backoff, sleep_unless

log = logging.getLogger(__name__)

CTRL_Z = b"\x1a"
ESC = b"\x1b"
SETTLE_SECONDS = 0.15
SIM_BUSY_PATIENCE = 10.0

ErrorKind = Literal["cms", "cme", "error"]


class ModemError(Exception):
    """Anything that went wrong talking to the modem.

    ``pdu_written`` is True when a send failed after its PDU reached the modem and no answer
    said whether it went out (a timeout, an unplug, an OK without a reference): the text may
    have been sent. An explicit ``+CMS ERROR`` means it was not, and leaves this False.
    """

    pdu_written: bool = False


class ModemUnavailable(ModemError):
    """The modem is not open, gone, or being reset: try again later."""


class CommandTimeout(ModemError):
    """No final answer in time; the modem is being reset."""


class CommandFailed(ModemError):
    """The modem answered ERROR, ``+CMS ERROR: <n>`` or ``+CME ERROR: <n>``."""

    def __init__(
        self, command: str, kind: ErrorKind, code: int | None, permanent: bool, description: str
    ) -> None:
        self.command = command
        self.kind: ErrorKind = kind
        self.code = code
        self.permanent = permanent
        self.description = description
        answer = "ERROR" if kind == "error" else f"+{kind.upper()} ERROR: {code}"
        if kind != "error" and code is None:
            answer = f"+{kind.upper()} ERROR"
        lasting = "permanent" if permanent else "temporary"
        super().__init__(f"{command}: {answer} ({description}, {lasting})")


# (permanent?, description). "Permanent" means: sending this same PDU again will not help.
# 0-127: RP-cause values (3GPP 24.011 §8.2.5.4, Table 8.4); 128-255: TP-FCS (23.040
# §9.2.3.22); 300-511: 27.005 §3.2.5; 512 and up: manufacturer specific.
_CMS: dict[int, tuple[bool, str]] = {
    1: (True, "unassigned number"),
    8: (True, "operator determined barring"),
    10: (True, "call barred"),
    17: (False, "network failure"),
    21: (True, "short message transfer rejected"),
    22: (False, "memory capacity exceeded"),
    27: (False, "destination out of service"),
    28: (True, "unidentified subscriber"),
    29: (True, "facility rejected"),
    30: (True, "unknown subscriber"),
    38: (False, "network out of order"),
    41: (False, "temporary failure"),
    42: (False, "congestion"),
    47: (False, "resources unavailable"),
    50: (True, "requested facility not subscribed"),
    69: (True, "requested facility not implemented"),
    81: (False, "invalid short message transfer reference value"),
    95: (True, "invalid message"),
    96: (True, "invalid mandatory information"),
    97: (True, "message type non-existent or not implemented"),
    98: (False, "message not compatible with short message protocol state"),
    99: (True, "information element non-existent or not implemented"),
    111: (False, "protocol error"),
    127: (False, "interworking error"),
    128: (True, "telematic interworking not supported"),
    129: (True, "short message type 0 not supported"),
    130: (True, "cannot replace short message"),
    143: (True, "unspecified TP-PID error"),
    144: (True, "data coding scheme not supported"),
    145: (True, "message class not supported"),
    159: (True, "unspecified TP-DCS error"),
    160: (True, "command cannot be actioned"),
    161: (True, "command unsupported"),
    175: (True, "unspecified TP-command error"),
    176: (True, "TPDU not supported"),
    192: (False, "SC busy"),
    193: (True, "no SC subscription"),
    194: (False, "SC system failure"),
    195: (True, "invalid SME address"),
    196: (True, "destination SME barred"),
    197: (True, "duplicate SM rejected"),
    198: (True, "TP-VPF not supported"),
    199: (True, "TP-VP not supported"),
    208: (False, "SIM SMS storage full"),
    209: (False, "no SMS storage capability in SIM"),
    210: (False, "error in MS"),
    211: (False, "memory capacity exceeded"),
    212: (False, "SIM application toolkit busy"),
    213: (False, "SIM data download error"),
    255: (False, "unspecified error"),
    300: (False, "ME failure"),
    301: (False, "SMS service of ME reserved"),
    302: (False, "operation not allowed"),
    303: (False, "operation not supported"),
    304: (True, "invalid PDU mode parameter"),
    305: (True, "invalid text mode parameter"),
    310: (False, "SIM not inserted"),
    311: (False, "SIM PIN required"),
    312: (False, "PH-SIM PIN required"),
    313: (False, "SIM failure"),
    314: (False, "SIM busy"),
    315: (False, "SIM wrong"),
    316: (False, "SIM PUK required"),
    317: (False, "SIM PIN2 required"),
    318: (False, "SIM PUK2 required"),
    320: (False, "memory failure"),
    321: (True, "invalid memory index"),
    322: (False, "memory full"),
    330: (True, "SMSC address unknown"),
    331: (False, "no network service"),
    332: (False, "network timeout"),
    340: (True, "no +CNMA acknowledgement expected"),
    500: (False, "unknown error"),
}

_CME: dict[int, tuple[bool, str]] = {
    0: (False, "phone failure"),
    3: (False, "operation not allowed"),
    4: (False, "operation not supported"),
    10: (False, "SIM not inserted"),
    11: (False, "SIM PIN required"),
    12: (False, "SIM PUK required"),
    13: (False, "SIM failure"),
    14: (False, "SIM busy"),
    15: (False, "SIM wrong"),
    16: (True, "incorrect password"),
    20: (False, "memory full"),
    21: (True, "invalid index"),
    30: (False, "no network service"),
    31: (False, "network timeout"),
    32: (False, "network not allowed, emergency calls only"),
    50: (True, "incorrect parameters"),
    100: (False, "unknown"),
}

_BUSY = {("cms", 314), ("cme", 14), ("cms", 515), ("cme", 515)}


def classify_cms(code: int) -> tuple[bool, str]:
    """(permanent?, short description) for a ``+CMS ERROR: <code>``.

    Permanent means that sending the same PDU again cannot succeed (a bad PDU, a barred or
    unknown destination, a service the subscription lacks); modem, SIM and network states
    are temporary. Codes not in the table: TP-PID/DCS/command errors (128-176) are
    permanent, everything else temporary.
    """
    known = _CMS.get(code)
    if known is not None:
        return known
    if code >= 512:
        return False, "manufacturer specific error"
    if 128 <= code <= 176:
        return True, "TPDU error"
    if code < 128:
        return False, "network cause"
    if code < 300:
        return False, "SC or MS error"
    return False, "modem error"


def classify_cme(code: int) -> tuple[bool, str]:
    """(permanent?, short description) for a ``+CME ERROR: <code>`` (27.007 §9.2)."""
    return _CME.get(code, (False, "manufacturer specific error" if code >= 256 else "error"))


@dataclass(frozen=True)
class ModemIdentity:
    imei: str
    imsi: str


@dataclass(frozen=True)
class ModemHealth:
    signal: int | None  # CSQ rssi 0-31; None when unknown (99)
    registration: str  # home, roaming, searching, denied, not-registered, unknown
    operator: str


_REGISTRATION = {
    0: "not-registered",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home",  # SMS only, home
    7: "roaming",  # SMS only, roaming
    8: "not-registered",  # emergency services only
    9: "home",  # CSFB not preferred, home
    10: "roaming",  # CSFB not preferred, roaming
}

_FINALS = {
    "OK",
    "ERROR",
    "NO CARRIER",
    "BUSY",
    "NO ANSWER",
    "NO DIALTONE",
    "COMMAND NOT SUPPORT",
    "TOO MANY PARAMETERS",
}
_OTHER_URCS = (
    "RING",
    "+CRING:",
    "+CLIP:",
    "+CBM:",
    "+CUSD:",
    "+CIEV:",
    "+CGEV:",
    "+PACSP",
    "+QIND:",
    "+CMTI",
    "+CDSI",
    "^",
)
_STORED_URC = re.compile(r'^\+(CMTI|CDSI):\s*"?([A-Za-z]*)"?\s*,\s*(\d+)')
_CMT = re.compile(r"^\+CMT:.*,\s*(\d+)\s*$")
_CDS = re.compile(r"^\+CDS:\s*(\d+)\s*$")
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_SPLIT = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class _Work:
    """Something the reader found for the worker: a stored message to read, a PDU to hand
    on, or a sweep of the whole storage."""

    kind: Literal["stored", "sms", "status", "sweep"]
    pdu: str = ""
    mem: str = ""
    index: int = -1


def _clean(raw: bytes) -> str:
    """A received line as text: undecodable and non-printable bytes dropped, never raising."""
    text = raw.decode("ascii", errors="replace")
    return "".join(c for c in text if " " <= c <= "~").strip()


def _masked(line: str) -> str:
    return re.sub(r"(?i)(\+CPIN=)\S+", r"\1****", line)


def _with_smsc(pdu: str, tpdu_length: int) -> str:
    """Prepend an empty SMSC field when the PDU is just the TPDU."""
    pdu = pdu.upper()
    if len(pdu) // 2 == tpdu_length:
        return "00" + pdu
    return pdu


def _pdu_kind(pdu: str) -> str | None:
    """``deliver``, ``submit`` or ``status`` from TP-MTI, skipping the SMSC field."""
    try:
        raw = bytes.fromhex(pdu)
        first = raw[1 + raw[0]]
    except (ValueError, IndexError):
        return None
    return {0: "deliver", 1: "submit", 2: "status"}.get(first & 0x03)


def _failure(command: str, final: str) -> CommandFailed:
    m = re.match(r"^\+(CMS|CME) ERROR:\s*(.*)$", final)
    if m is None:
        return CommandFailed(command, "error", None, False, final.lower())
    kind: ErrorKind = "cms" if m.group(1) == "CMS" else "cme"
    detail = m.group(2).strip()
    if detail.isdigit():
        code = int(detail)
        permanent, description = classify_cms(code) if kind == "cms" else classify_cme(code)
        return CommandFailed(command, kind, code, permanent, description)
    return CommandFailed(command, kind, None, False, detail or "unspecified")


def _baud(baud: int) -> int:
    speed = getattr(termios, f"B{baud}", None)
    if not isinstance(speed, int):
        raise ValueError(f"unsupported baud rate {baud}")
    return speed


def _open_device(path: str, speed: int) -> int:
    """Open and configure the serial device: raw 8N1, no flow control, non-blocking.
    Runs in a worker thread (a USB device being re-enumerated can be slow to open)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not os.isatty(fd):
            raise ModemError(f"{path} is not a serial device")
        attrs: list[Any] = termios.tcgetattr(fd)
        attrs[0] = 0  # iflag: no CR/NL translation, no XON/XOFF, no parity marking
        attrs[1] = 0  # oflag: no output processing
        attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL  # 8N1, ignore modem lines
        attrs[3] = 0  # lflag: no echo, not canonical, no signals
        attrs[4] = attrs[5] = speed
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        termios.tcflush(fd, termios.TCIOFLUSH)
        with contextlib.suppress(OSError):
            fcntl.ioctl(fd, termios.TIOCEXCL)  # keep ModemManager and friends out
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Pending:
    """The command on the line and what has come back for it."""

    def __init__(self, text: str, wants_prompt: bool) -> None:
        loop = asyncio.get_running_loop()
        self.text = text
        self.echo = text.upper()
        self.lines: list[str] = []
        self.final: asyncio.Future[str] = loop.create_future()
        self.prompt: asyncio.Future[None] = loop.create_future()
        self.wants_prompt = wants_prompt

    def settle(self) -> None:
        """Mark exceptions as retrieved, so asyncio does not warn about them."""
        for fut in (self.final, self.prompt):
            if fut.done() and not fut.cancelled():
                fut.exception()
            else:
                fut.cancel()


class _Link:
    """One opened device: the descriptor, the reader, the writer, the command on the line."""

    def __init__(
        self, name: str, fd: int, work: asyncio.Queue[_Work], on_lost: Callable[[], None]
    ) -> None:
        self.name = name
        self.fd = fd
        self.work = work
        self.on_lost = on_lost
        self.loop = asyncio.get_running_loop()
        self.rbuf = bytearray()
        self.received = 0
        self.wbuf = bytearray()
        self.drained: asyncio.Future[None] | None = None
        self.writing = False
        self.pending: _Pending | None = None
        self.pdu_for: tuple[Literal["sms", "status"], int] | None = None
        self.lost = asyncio.Event()
        self.reason = ""
        self.closed = False
        self.initialised = False
        self.loop.add_reader(fd, self._on_readable)

    # ---- life ---------------------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """The link is unusable: stop reading, fail the command on the line, tell the modem."""
        if self.lost.is_set():
            return
        self.reason = reason
        self.lost.set()
        self._stop_io()
        error = ModemUnavailable(f"modem {self.name}: {reason}")
        pending = self.pending
        if pending is not None and not pending.final.done():
            pending.final.set_exception(error)
        if self.drained is not None and not self.drained.done():
            self.drained.set_exception(error)
            self.drained.exception()
        self.on_lost()

    def _stop_io(self) -> None:
        if self.closed:
            return
        self.loop.remove_reader(self.fd)
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False

    def close(self) -> None:
        self.fail("closed")
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.fd, termios.TIOCNXCL)
        with contextlib.suppress(OSError):
            os.close(self.fd)

    async def settle(self) -> None:
        """Leave a ``> `` prompt a previous run may have left open, then forget old input."""
        self._write_now(ESC)
        await asyncio.sleep(SETTLE_SECONDS)
        if self.lost.is_set():
            raise ModemUnavailable(f"modem {self.name}: {self.reason}")
        with contextlib.suppress(termios.error, OSError):
            termios.tcflush(self.fd, termios.TCIFLUSH)
        self.rbuf.clear()
        self.pdu_for = None

    async def drain(self, limit: float) -> None:
        """Wait until nothing has arrived for a moment (at most ``limit`` s), then forget
        the unfinished input; URCs that came meanwhile were dispatched as usual."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            before = self.received
            await asyncio.sleep(SETTLE_SECONDS * 2)
            if self.received == before:
                break
        if self.lost.is_set():
            raise ModemUnavailable(f"modem {self.name}: {self.reason}")
        self.rbuf.clear()
        self.pdu_for = None

    # ---- reading -----------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.fail(f"read failed: {exc.strerror or exc}")
            return
        if not data:
            self.fail("device closed (end of file)")
            return
        self.received += len(data)
        self.feed(data)

    def feed(self, data: bytes) -> None:
        self.rbuf += data
        while True:
            m = _SPLIT.search(self.rbuf)
            if m is None:
                break
            raw = bytes(self.rbuf[: m.start()])
            del self.rbuf[: m.end()]
            line = _clean(raw)
            if line:
                self._line(line)
        if len(self.rbuf) > 65536:
            log.warning("modem %s: %d bytes without a line end dropped", self.name, len(self.rbuf))
            self.rbuf.clear()
        pending = self.pending
        if (
            pending is not None
            and pending.wants_prompt
            and not pending.prompt.done()
            and _clean(bytes(self.rbuf)).startswith(">")
        ):
            self.rbuf.clear()
            pending.prompt.set_result(None)

    def _line(self, line: str) -> None:
        if self.pdu_for is not None:
            kind, length = self.pdu_for
            self.pdu_for = None
            if _HEX.match(line):
                self.work.put_nowait(_Work(kind, pdu=_with_smsc(line, length)))
                return
            log.warning("modem %s: no PDU line after a +CMT/+CDS header", self.name)
        pending = self.pending
        if pending is not None and pending.final.done():
            pending = None  # answered: what comes now belongs to nobody
        if self._urc(line):
            return
        if pending is None:
            log.debug("modem %s: ignored unsolicited %r", self.name, _masked(line))
            return
        if pending.wants_prompt and not pending.prompt.done() and line.startswith(">"):
            pending.prompt.set_result(None)
            return
        if line.upper() == pending.echo:
            return
        if line in _FINALS or line.startswith(("+CMS ERROR", "+CME ERROR")):
            if not pending.final.done():
                pending.final.set_result(line)
            return
        pending.lines.append(line)

    def _urc(self, line: str) -> bool:
        m = _STORED_URC.match(line)
        if m is not None:
            self.work.put_nowait(_Work("stored", mem=m.group(2).upper(), index=int(m.group(3))))
            log.debug("modem %s: %s", self.name, line)
            return True
        m = _CMT.match(line)
        if m is not None:
            self.pdu_for = ("sms", int(m.group(1)))
            return True
        m = _CDS.match(line)
        if m is not None:
            self.pdu_for = ("status", int(m.group(1)))
            return True
        if line.startswith(_OTHER_URCS):
            log.debug("modem %s: ignored URC %r", self.name, line)
            return True
        return False

    # ---- writing ------------------------------------------------------------------------

    def _write_now(self, data: bytes) -> None:
        """Queue ``data`` and write what the device takes now; the loop writes the rest."""
        if self.lost.is_set():
            raise ModemUnavailable(f"modem {self.name}: {self.reason}")
        self.wbuf += data
        self._flush()

    def _flush(self) -> None:
        while self.wbuf and not self.lost.is_set():
            try:
                n = os.write(self.fd, self.wbuf[:1024])
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.fail(f"write failed: {exc.strerror or exc}")
                return
            del self.wbuf[:n]
        if self.wbuf and not self.writing:
            self.loop.add_writer(self.fd, self._flush)
            self.writing = True
        elif not self.wbuf:
            if self.writing:
                self.loop.remove_writer(self.fd)
                self.writing = False
            if self.drained is not None and not self.drained.done():
                self.drained.set_result(None)

    async def write(self, data: bytes, seconds: float, label: str) -> None:
        self._write_now(data)
        if not self.wbuf:
            return
        if self.drained is None or self.drained.done():
            self.drained = self.loop.create_future()
        try:
            async with asyncio.timeout(seconds):
                await asyncio.shield(self.drained)
        except TimeoutError:
            raise self._timed_out(label, "the device took no data") from None

    # ---- commands ----------------------------------------------------------------------

    def _timed_out(self, label: str, what: str) -> CommandTimeout:
        self.fail(f"{label}: {what}; resetting")
        return CommandTimeout(f"modem {self.name}: {label}: {what}")

    async def command(
        self,
        text: str,
        seconds: float,
        *,
        label: str | None = None,
        pdu: str | None = None,
        pdu_seconds: float = 0.0,
    ) -> list[str]:
        """Send one command line (and, for ``AT+CMGS``, the PDU after the prompt); the
        information lines of an OK answer, or raise. ``seconds`` bounds each wait,
        ``pdu_seconds`` the wait for the answer after the PDU."""
        if self.lost.is_set():
            raise ModemUnavailable(f"modem {self.name}: {self.reason}")
        label = label or text
        pending = _Pending(text, wants_prompt=pdu is not None)
        self.pending = pending
        pdu_written = False
        log.debug("modem %s: >> %s", self.name, label)
        try:
            await self.write(text.encode("ascii") + b"\r", seconds, label)
            if pdu is not None:
                waiters: set[asyncio.Future[Any]] = {pending.prompt, pending.final}
                done, _ = await asyncio.wait(
                    waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    with contextlib.suppress(ModemError):
                        self._write_now(ESC)
                    raise self._timed_out(label, "no '> ' prompt")
                if not pending.final.done():
                    log.debug("modem %s: >> (PDU of %d octets)", self.name, len(pdu) // 2)
                    pdu_written = True
                    await self.write(pdu.encode("ascii") + CTRL_Z, seconds, label)
                    seconds = pdu_seconds
            try:
                async with asyncio.timeout(seconds):
                    final = await asyncio.shield(pending.final)
            except TimeoutError:
                raise self._timed_out(label, f"no answer within {seconds:g} s") from None
        except ModemError as exc:
            exc.pdu_written = pdu_written
            raise
        except asyncio.CancelledError:
            # Its answer would come later and be taken for the next command's: start afresh.
            self.fail(f"{label}: cancelled while on the line; resetting")
            raise
        finally:
            if self.pending is pending:
                self.pending = None
            pending.settle()
        log.debug("modem %s: << %s %s", self.name, [_masked(x) for x in pending.lines], final)
        if final == "OK":
            return pending.lines
        raise _failure(label, final)


Callback = Callable[[str], Awaitable[None]]


class Modem:
    """One GSM modem, kept open, initialised and serving for as long as ``run`` runs."""

    def __init__(
        self,
        config: ModemConfig,
        *,
        on_sms: Callback,
        on_status_report: Callback,
        on_identity: Callable[[ModemIdentity], Awaitable[None]] | None = None,
        on_health: Callable[[ModemHealth], Awaitable[None]] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.on_sms = on_sms
        self.on_status_report = on_status_report
        self.on_identity = on_identity
        self.on_health = on_health
        self.ready = asyncio.Event()
        self.identity: ModemIdentity | None = None
        self.health: ModemHealth | None = None
        self._speed = _baud(config.baud)
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._work: asyncio.Queue[_Work] = asyncio.Queue()
        self._pin_refused = False
        self._read_mem = ""
        self._deferred: list[_Work] = []

    # ---- the life of the modem ---------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Open, initialise and serve; reopen when the device goes away; until ``stopping``."""
        backoff = Backoff()
        worker = asyncio.create_task(self._worker())
        last_problem: str | None = None
        try:
            while not stopping.is_set():
                try:
                    await self._session(stopping, backoff)
                    problem = None
                except (ModemError, OSError) as exc:
                    problem = str(exc) if isinstance(exc, ModemError) else _oserror(exc)
                if stopping.is_set():
                    break
                if problem is not None:
                    level = logging.WARNING if problem != last_problem else logging.DEBUG
                    log.log(level, "modem %s: %s", self.name, problem)
                last_problem = problem
                if await sleep_unless(stopping, backoff.next_delay()):
                    break
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
            self.ready.clear()
            log.info("modem %s: stopped", self.name)

    async def _session(self, stopping: asyncio.Event, backoff: Backoff) -> None:
        fd = await self._open()
        link = _Link(self.name, fd, self._work, self.ready.clear)
        self._link = link
        log.debug("modem %s: opened %s", self.name, self.config.port)
        serve = asyncio.create_task(self._serve(link, backoff))
        stop = asyncio.create_task(stopping.wait())
        lost = asyncio.create_task(link.lost.wait())
        try:
            await asyncio.wait({serve, stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.ready.clear()
            for task in (serve, stop, lost):
                task.cancel()
            await asyncio.gather(serve, stop, lost, return_exceptions=True)
            lost_reason = link.reason if link.lost.is_set() else ""
            self._link = None
            link.close()
        if stopping.is_set():
            return
        if lost_reason:
            if link.initialised:
                log.warning("modem %s: link lost: %s; reopening", self.name, lost_reason)
                return
            raise ModemUnavailable(lost_reason)
        if serve.done() and not serve.cancelled():
            failure = serve.exception()
            if failure is not None:
                raise failure

    async def _open(self) -> int:
        """Open the device in a worker thread, bounded by ``command_timeout``; a descriptor
        that arrives after we gave up is closed, not leaked."""
        path = str(self.config.port)
        opening = asyncio.ensure_future(asyncio.to_thread(_open_device, path, self._speed))
        try:
            # asyncio.wait, not wait_for: 3.11's wait_for can swallow a cancellation.
            done, _ = await asyncio.wait({opening}, timeout=self.config.command_timeout)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_late)
            raise
        if not done:
            opening.add_done_callback(_close_late)
            raise ModemUnavailable(f"opening {path} timed out")
        try:
            return opening.result()
        except OSError as exc:
            raise ModemUnavailable(f"cannot open {path}: {_oserror(exc)}") from None

    async def _serve(self, link: _Link, backoff: Backoff) -> None:
        await self._init(link)
        link.initialised = True
        self.ready.set()
        backoff.reset()
        deferred, self._deferred = self._deferred, []
        for work in deferred[-16:]:  # a few is plenty: each one reads or sweeps
            self._work.put_nowait(work)
        log.info("modem %s: ready", self.name)
        await self._health_loop(link)

    # ---- init --------------------------------------------------------------------------

    async def _at(self, link: _Link, text: str, *, label: str | None = None) -> list[str]:
        async with self._lock:
            return await link.command(text, self.config.command_timeout, label=label)

    async def _at_patient(self, link: _Link, text: str) -> list[str]:
        """A command retried while the SIM is still busy after the PIN."""
        deadline = asyncio.get_running_loop().time() + SIM_BUSY_PATIENCE
        while True:
            try:
                return await self._at(link, text)
            except CommandFailed as exc:
                busy = (exc.kind, exc.code) in _BUSY
                if not busy or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def _init(self, link: _Link) -> None:
        await link.settle()
        try:
            await self._at(link, "ATZ")
        except CommandFailed:
            await self._at(link, "AT")
        await self._at(link, "ATE0")
        imei = await self._sync(link)
        try:
            await self._at(link, "AT+CMEE=1")
        except CommandFailed:
            log.debug("modem %s: AT+CMEE=1 refused; errors will be bare", self.name)
        await self._unlock_sim(link)
        await self._at_patient(link, "AT+CMGF=0")
        await self._set_cnmi(link)
        if self.config.smsc:
            await self._at_patient(link, f'AT+CSCA="{self.config.smsc}",145')
        await self._read_identity(link, imei)
        await self._read_storage(link)
        await self._sweep(link)

    async def _unlock_sim(self, link: _Link) -> None:
        state = await self._cpin(link)
        if state == "READY":
            return
        if state != "SIM PIN":
            raise ModemError(f"SIM not usable: {state} (enter it by hand; never retried here)")
        pin = self.config.pin
        if pin is None:
            raise ModemError("the SIM asks for a PIN and none is configured")
        if self._pin_refused:
            raise ModemError("the SIM refused the configured PIN; not tried again (fix, restart)")
        try:
            await self._at(link, f'AT+CPIN="{pin.value}"', label='AT+CPIN="****"')
        except CommandFailed as exc:
            if (exc.kind, exc.code) not in _BUSY:
                self._pin_refused = True
                log.error(
                    "modem %s: the SIM refused the PIN (%s); it will not be tried again, so the "
                    "SIM does not lock itself behind its PUK",
                    self.name,
                    exc.description,
                )
            raise
        log.info("modem %s: SIM PIN accepted", self.name)
        deadline = asyncio.get_running_loop().time() + SIM_BUSY_PATIENCE
        while state != "READY" and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
            with contextlib.suppress(CommandFailed):
                state = await self._cpin(link)
        if state != "READY":
            raise ModemError(f"SIM not ready after the PIN: {state}")

    async def _cpin(self, link: _Link) -> str:
        for line in await self._at(link, "AT+CPIN?"):
            if line.upper().startswith("+CPIN:"):
                return line.split(":", 1)[1].strip().upper()
        raise ModemError("AT+CPIN? gave no +CPIN line")

    async def _set_cnmi(self, link: _Link) -> None:
        for setting in ("2,1,0,1,0", "1,1,0,1,0", "2,1,0,0,0"):
            try:
                await self._at_patient(link, f"AT+CNMI={setting}")
            except CommandFailed as exc:
                log.debug("modem %s: AT+CNMI=%s refused: %s", self.name, setting, exc)
                continue
            if setting.endswith("0,0"):
                log.warning("modem %s: no delivery reports (AT+CNMI refused them)", self.name)
            return
        log.warning(
            "modem %s: AT+CNMI refused; inbound SMS only found by the periodic sweep", self.name
        )

    async def _sync(self, link: _Link) -> str:
        """Make sure each answer belongs to its command; the IMEI.

        A command that was on the line when the link was reset (a slow ``AT+CMGS`` the
        network answers late) may still be answered after the reopen, and that stale OK
        would be taken for the answer to our next command, and so on down the line.
        ``AT+CGSN`` answers with a line no stale answer has: until it does, wait for the
        line to go quiet, forget what came, and ask again.
        """
        for attempt in range(4):
            lines: list[str] = []
            with contextlib.suppress(CommandFailed):
                lines = await self._at(link, "AT+CGSN")
            imei = _first_match(lines, r"\d{14,17}")
            if imei:
                if attempt:
                    log.info("modem %s: answers back in step after a stale one", self.name)
                return imei
            await link.drain(self.config.command_timeout)
        log.warning("modem %s: AT+CGSN gives no IMEI; answers may be out of step", self.name)
        return ""

    async def _read_identity(self, link: _Link, imei: str) -> None:
        imsi = ""
        with contextlib.suppress(CommandFailed):
            imsi = _first_match(await self._at_patient(link, "AT+CIMI"), r"\d{6,15}")
        identity = ModemIdentity(imei=imei, imsi=imsi)
        self.identity = identity
        log.info("modem %s: IMEI %s, SIM network %s", self.name, imei or "?", imsi[:5] or "?")
        if self.on_identity is not None:
            await self._callback(self.on_identity, identity, "on_identity")

    async def _read_storage(self, link: _Link) -> None:
        try:
            lines = await self._at_patient(link, "AT+CPMS?")
        except CommandFailed as exc:
            log.debug("modem %s: AT+CPMS? refused: %s", self.name, exc)
            return
        self._read_mem = _first_match(lines, r'\+CPMS:\s*"([A-Za-z]+)"', group=1).upper()

    # ---- inbound -----------------------------------------------------------------------

    async def _sweep(self, link: _Link) -> None:
        """Every message stored in the modem: hand it on, then delete it."""
        lines = await self._at_patient(link, "AT+CMGL=4")
        for index, pdu in _listing(lines, "+CMGL:"):
            await self._take_stored(link, index, pdu)

    async def _read_stored(self, link: _Link, mem: str, index: int) -> None:
        if mem and self._read_mem and mem != self._read_mem:
            await self._at(link, f'AT+CPMS="{mem}"')
            self._read_mem = mem
        try:
            lines = await self._at(link, f"AT+CMGR={index}")
        except CommandFailed as exc:
            log.debug("modem %s: AT+CMGR=%d: %s", self.name, index, exc)
            return
        for _, pdu in _listing(lines, "+CMGR:"):
            await self._take_stored(link, index, pdu)

    async def _take_stored(self, link: _Link, index: int, pdu: str) -> None:
        kind = _pdu_kind(pdu)
        if kind == "deliver":
            ok = await self._callback(self.on_sms, pdu, "on_sms")
        elif kind == "status":
            ok = await self._callback(self.on_status_report, pdu, "on_status_report")
        else:
            log.debug("modem %s: stored message %d is not inbound; left alone", self.name, index)
            return
        if not ok:
            log.warning("modem %s: message %d left in the modem's storage", self.name, index)
            return
        await self._at(link, f"AT+CMGD={index}")
        log.debug("modem %s: deleted stored message %d", self.name, index)

    async def _callback(
        self, callback: Callable[[Any], Awaitable[None]], arg: Any, what: str
    ) -> bool:
        try:
            await callback(arg)
        except Exception:
            log.exception("modem %s: %s failed", self.name, what)
            return False
        return True

    async def _worker(self) -> None:
        """Hands on what the readers found, one item at a time, across reconnects."""
        while True:
            work = await self._work.get()
            try:
                await self._do(work)
            except ModemError as exc:
                log.debug("modem %s: %s dropped: %s", self.name, work.kind, exc)
            except Exception:
                log.exception("modem %s: handling %s failed", self.name, work.kind)

    async def _do(self, work: _Work) -> None:
        if work.kind == "sms":
            if not await self._callback(self.on_sms, work.pdu, "on_sms"):
                log.error("modem %s: an SMS routed directly (+CMT) was lost", self.name)
            return
        if work.kind == "status":
            await self._callback(self.on_status_report, work.pdu, "on_status_report")
            return
        link = self._link
        if link is None or not self.ready.is_set():
            self._deferred.append(work)  # again once ready (the init sweep may cover it)
            return
        if work.kind == "stored":
            await self._read_stored(link, work.mem, work.index)
        else:
            await self._sweep(link)

    # ---- health ------------------------------------------------------------------------

    async def _health_loop(self, link: _Link) -> None:
        first = True
        while True:
            try:
                await self._poll_health(link)
            except CommandFailed as exc:
                log.debug("modem %s: health poll: %s", self.name, exc)
            if not first:
                self._work.put_nowait(_Work("sweep"))
            first = False
            await asyncio.sleep(self.config.health_interval)

    async def _poll_health(self, link: _Link) -> None:
        signal: int | None = None
        registration = "unknown"
        operator = ""
        with contextlib.suppress(CommandFailed):
            rssi = _first_match(await self._at(link, "AT+CSQ"), r"\+CSQ:\s*(\d+)", group=1)
            if rssi and 0 <= int(rssi) <= 31:
                signal = int(rssi)
        with contextlib.suppress(CommandFailed):
            stat = _first_match(
                await self._at(link, "AT+CREG?"), r"\+CREG:\s*\d+\s*,\s*(\d+)", group=1
            )
            if stat:
                registration = _REGISTRATION.get(int(stat), "unknown")
        with contextlib.suppress(CommandFailed):
            operator = _first_match(
                await self._at(link, "AT+COPS?"),
                r'\+COPS:\s*\d+\s*,\s*\d+\s*,\s*"([^"]*)"',
                group=1,
            )
        health = ModemHealth(signal=signal, registration=registration, operator=operator)
        self.health = health
        log.info(
            "modem %s: signal %s, registration %s, operator %s",
            self.name,
            f"{signal}/31" if signal is not None else "unknown",
            registration,
            operator or "none",
        )
        if self.on_health is not None:
            await self._callback(self.on_health, health, "on_health")

    # ---- sending -----------------------------------------------------------------------

    def _usable(self) -> _Link:
        link = self._link
        if link is None or not self.ready.is_set() or link.lost.is_set():
            raise ModemUnavailable(f"modem {self.name} is not ready")
        return link

    async def send_pdu(self, pdu_hex: str, tpdu_length: int) -> int:
        """Send one SMS-SUBMIT PDU (hex, SMSC field first); the message reference."""
        pdu = pdu_hex.strip().upper()
        if not _HEX.match(pdu):
            raise ValueError("the PDU is not hex")
        raw = bytes.fromhex(pdu)
        if len(raw) - 1 - raw[0] != tpdu_length or tpdu_length < 1:
            raise ValueError(f"the PDU's TPDU is not {tpdu_length} octets long")
        self._usable()
        async with self._lock:
            link = self._usable()
            lines = await link.command(
                f"AT+CMGS={tpdu_length}",
                self.config.command_timeout,
                pdu=pdu,
                pdu_seconds=self.config.send_timeout,
            )
        mr = _first_match(lines, r"\+CMGS:\s*(\d+)", group=1)
        if not mr:
            error = ModemError(f"modem {self.name}: AT+CMGS answered OK without +CMGS: <mr>")
            error.pdu_written = True
            raise error
        log.info("modem %s: message sent, reference %s", self.name, mr)
        return int(mr)


def _first_match(lines: list[str], pattern: str, group: int = 0) -> str:
    for line in lines:
        m = re.search(pattern, line)
        if m is not None:
            return m.group(group)
    return ""


def _listing(lines: list[str], header: str) -> list[tuple[int, str]]:
    """(index, pdu) pairs from a ``+CMGL`` listing or a ``+CMGR`` answer (index -1)."""
    found: list[tuple[int, str]] = []
    index: int | None = None
    for line in lines:
        if line.startswith(header):
            m = re.match(r"^\+CMGL:\s*(\d+)", line)
            index = int(m.group(1)) if m else -1
        elif index is not None and _HEX.match(line):
            found.append((index, line.upper()))
            index = None
    return found


def _close_late(opening: asyncio.Future[int]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(OSError):
            os.close(opening.result())


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)
