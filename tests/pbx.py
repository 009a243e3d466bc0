"""Real-PBX test helpers: Asterisk 22 (scripts/asterisk.sh) and SIPp phones/carrier.

Everything runs on loopback:

* Asterisk: SIP 127.0.0.1:5060 (UDP), AMI 127.0.0.1:5038, HTTP/ARI 127.0.0.1:8088.
* The carrier (SIPp UAC, :func:`call`) sends from 127.0.0.2, which the test overlay
  identifies as the ``carrier`` trunk endpoint (context ``callcatch-inbound``).
* The phones (SIPp UAS, :class:`Phone`) listen on 127.0.0.1:5081 (phone1) and :5082 (phone2).

See tests/asterisk/README.md for the DIDs. SIPp logs go to temporary directories, never into
the repository. Every SIPp process started here is bounded in time and killed at the latest
when its context manager exits (or :meth:`CallProcess.result` times out).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

REPO: Path = Path(__file__).resolve().parent.parent
ASTERISK_ROOT: Path = Path(
    os.environ.get("CALLCATCH_ASTERISK_ROOT", "/var/cache/callcatch/asterisk-root")
)
ASTERISK_SH: Path = REPO / "scripts" / "asterisk.sh"
LOG_DIR: Path = ASTERISK_ROOT / "var" / "log" / "asterisk"
CDR_CSV: Path = LOG_DIR / "cdr-csv" / "Master.csv"
CDR_SQLITE: Path = LOG_DIR / "master.db"
SIPP_DIR: Path = REPO / "tests" / "sipp"

PBX_HOST = "127.0.0.1"
SIP_PORT = 5060
AMI_PORT = 5038
HTTP_PORT = 8088
AMI_USER = "callcatch"
AMI_SECRET: str = os.environ.get("CALLCATCH_AMI_SECRET", "test-ami-secret")
ARI_USER = "callcatch"
ARI_PASSWORD: str = os.environ.get("CALLCATCH_ARI_PASSWORD", "test-ari-password")
ARI_APP = "callcatch"
ARI_URL = f"http://{PBX_HOST}:{HTTP_PORT}/ari"
ARI_EVENTS_URL = (
    f"ws://{PBX_HOST}:{HTTP_PORT}/ari/events?app={ARI_APP}&api_key={ARI_USER}:{ARI_PASSWORD}"
)

CARRIER_IP = "127.0.0.2"
PHONE_PORTS: dict[str, int] = {"phone1": 5081, "phone2": 5082}

# Test DIDs (tests/asterisk/extensions.conf). Each also works as +1<DID>.
DID_RING = "5550101"  # phone1, 30 s, then hangup
DID_SHORT_RING = "5550102"  # phone1, 3 s -> NOANSWER, then hangup
DID_UNAVAILABLE = "5550103"  # phone3 (no contact) -> CHANUNAVAIL
DID_RING_GROUP = "5550104"  # Local/group -> phone1 & phone2, 30 s
DID_VOICEMAIL = "5550105"  # phone1, 3 s -> VoiceMail(100@default,u)
DID_FORWARDED = "5550106"  # -> callcatch-forwarded (Stasis callcatch,forwarded)
DID_HOOK = "5550107"  # like 5550101 + callcatch-hook hangup handler
DID_STASIS = "5550108"  # phone1, 3 s -> Stasis(callcatch,after-dial,NOANSWER)

DEFAULT_CALLER = "+12125550123"

PhoneMode = Literal["ring", "answer", "busy"]

_SIPP = shutil.which("sipp") or "/usr/bin/sipp"


class PbxError(RuntimeError):
    """scripts/asterisk.sh or SIPp failed."""


# --------------------------------------------------------------------------- Asterisk


class Asterisk:
    """Wraps scripts/asterisk.sh (needs root)."""

    def __init__(self, script: Path = ASTERISK_SH, root: Path = ASTERISK_ROOT) -> None:
        self.script = script
        self.root = root

    def _run(self, *args: str, timeout: float = 180) -> str:
        env = dict(os.environ, CALLCATCH_ASTERISK_ROOT=str(self.root))
        proc = subprocess.run(
            ["bash", str(self.script), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise PbxError(
                f"asterisk.sh {' '.join(args)} exited {proc.returncode}\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout

    def start(self, fresh: bool = False) -> None:
        """Lay out the configuration and start Asterisk, waiting until it is fully booted
        (AMI and HTTP listening). ``fresh`` clears CDRs, logs and voicemail first.
        If it is already running it is stopped first (so the configuration is current)."""
        if self.is_running():
            self.stop()
        self._run("start", *(["--fresh"] if fresh else []))

    def stop(self) -> None:
        self._run("stop", timeout=60)

    def restart(self) -> None:
        self._run("restart")

    def is_running(self) -> bool:
        env = dict(os.environ, CALLCATCH_ASTERISK_ROOT=str(self.root))
        proc = subprocess.run(
            ["bash", str(self.script), "status"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return proc.returncode == 0

    def cli(self, command: str) -> str:
        """Run one Asterisk CLI command, return its output."""
        return self._run("cli", command, timeout=30)

    def wait_no_channels(self, timeout: float = 10) -> None:
        """Wait until Asterisk has no active channels (between tests)."""
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            out = self.cli("core show channels count")
            m = re.search(r"^(\d+) active channels?", out, re.MULTILINE)
            if m and int(m.group(1)) == 0:
                return
            time.sleep(0.1)
        raise PbxError(f"channels still up after {timeout}s:\n{out}")


# --------------------------------------------------------------------------- SIPp helpers


def _udp_bound(ip: str, port: int) -> bool:
    """True if some socket is bound to ip:port (UDP), from /proc/net/udp."""
    a, b, c, d = (int(x) for x in ip.split("."))
    want = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == want for line in lines if len(line.split()) > 1)


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 3.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- phones


class Phone:
    """A test phone: SIPp UAS on 127.0.0.1:<port>, a context manager.

    mode "ring": 180 and never answers (200 to CANCEL, 487 to INVITE).
    mode "answer": 180, then 200 with SDP after ``answer_after_ms``; 200 to the BYE.
    mode "busy": 486 Busy Here.
    It handles ``calls`` calls, then SIPp exits; it is killed after ``timeout`` s anyway.
    """

    def __init__(
        self,
        port: int = 5081,
        mode: PhoneMode = "ring",
        answer_after_ms: int = 1000,
        calls: int = 1,
        timeout: float = 120,
        workdir: Path | None = None,
        host: str = PBX_HOST,
    ) -> None:
        if mode not in ("ring", "answer", "busy"):
            raise ValueError(f"unknown phone mode {mode!r}")
        self.host = host
        self.port = port
        self.mode = mode
        self.answer_after_ms = answer_after_ms
        self.calls = calls
        self.timeout = timeout
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"callcatch-phone{port}-"))
        self.stdout = self.workdir / f"phone{port}.stdout"
        self.stderr = self.workdir / f"phone{port}.stderr"
        self.messages = self.workdir / f"phone{port}_messages.log"
        self.errors = self.workdir / f"phone{port}_errors.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Phone:
        if _udp_bound(self.host, self.port):
            raise PbxError(f"127.0.0.1:{self.port} is already in use (a phone left running?)")
        cmd = [
            _SIPP,
            "-sf", str(SIPP_DIR / f"uas_{self.mode}.xml"),
            "-i", self.host,
            "-p", str(self.port),
            "-mi", self.host,
            "-mp", str(self.port + 1000),
            "-m", str(self.calls),
            "-timeout", f"{int(self.timeout)}s",
            *(["-set", "answer_ms", str(self.answer_after_ms)] if self.mode == "answer" else []),
            "-nostdin",
            "-trace_msg", "-message_file", str(self.messages),
            "-trace_err", "-error_file", str(self.errors),
        ]  # fmt: skip
        with open(self.stdout, "wb") as out, open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        deadline = time.monotonic() + 5
        while not _udp_bound(self.host, self.port):
            if self.process.poll() is not None:
                raise PbxError(
                    f"phone on port {self.port} exited {self.process.returncode}: "
                    f"{self.stderr.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise PbxError(f"phone on port {self.port} did not bind in 5 s")
            time.sleep(0.02)
        return self

    def wait(self, timeout: float = 30) -> int:
        """Wait until SIPp has handled its ``calls`` calls and exited; its exit code
        (0: all calls went as scripted)."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process)

    def __enter__(self) -> Phone:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- carrier


@dataclass
class CallResult:
    """What the carrier side (SIPp UAC) saw of one call."""

    returncode: int  # SIPp's exit code: 0 = the scenario ran as scripted
    stdout: Path
    stderr: Path
    messages: Path  # full SIP trace
    errors: Path  # SIPp's unexpected-message log (may not exist)
    log: Path  # scenario <log> lines
    started_at: float  # time.time() when SIPp was started
    ended_at: float  # time.time() when SIPp exited
    hangup_sent_at: float | None  # time.time() when the CANCEL (or our BYE) was sent
    remote_bye_at: float | None  # time.time() when Asterisk's BYE was received
    final_status: int | None  # final SIP response to the INVITE (200, 486, 487, 480...)
    call_id: str | None  # SIP Call-ID of the INVITE

    @property
    def ok(self) -> bool:
        return self.returncode == 0


_LOG_TIME = re.compile(r"^(CALLCATCH_\w+) ([0-9.]+) ([0-9.]+)\s*$", re.MULTILINE)


class CallProcess(subprocess.Popen[bytes]):
    """A running carrier call (SIPp UAC). A Popen; :meth:`result` waits and parses."""

    workdir: Path
    started_at: float
    call_timeout: float
    _paths: dict[str, Path]

    def result(self, timeout: float | None = None) -> CallResult:
        """Wait (killing SIPp after ``timeout``, default the call's timeout) and parse."""
        try:
            self.wait(timeout=self.call_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            _stop_process(self)
        ended = time.time()
        p = self._paths
        log_text = p["log"].read_text(errors="replace") if p["log"].exists() else ""
        times: dict[str, float] = {}
        for name, sec, usec in _LOG_TIME.findall(log_text):
            times[name] = float(sec) + float(usec) / 1e6
        final, call_id = _parse_trace(p["messages"])
        return CallResult(
            returncode=self.returncode if self.returncode is not None else -1,
            stdout=p["stdout"],
            stderr=p["stderr"],
            messages=p["messages"],
            errors=p["errors"],
            log=p["log"],
            started_at=self.started_at,
            ended_at=ended,
            hangup_sent_at=times.get("CALLCATCH_CANCEL_SENT", times.get("CALLCATCH_BYE_SENT")),
            remote_bye_at=times.get("CALLCATCH_REMOTE_BYE"),
            final_status=final,
            call_id=call_id,
        )

    def stop(self) -> None:
        _stop_process(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _stop_process(self)
        super().__exit__(exc_type, exc, tb)


def _parse_trace(messages: Path) -> tuple[int | None, str | None]:
    """Final response to the INVITE and the Call-ID, from SIPp's -trace_msg log."""
    if not messages.exists():
        return None, None
    text = messages.read_text(errors="replace")
    final: int | None = None
    call_id: str | None = None
    for block in text.split("-----------------------------------------------"):
        m_id = re.search(r"^Call-ID:\s*(\S+)", block, re.MULTILINE | re.IGNORECASE)
        if call_id is None and m_id:
            call_id = m_id.group(1)
        m = re.search(r"^SIP/2\.0 (\d{3}) ", block, re.MULTILINE)
        if not m or "received" not in block.split("\n", 2)[1]:
            continue
        if re.search(r"^CSeq:\s*\d+ INVITE", block, re.MULTILINE | re.IGNORECASE):
            code = int(m.group(1))
            if code >= 200:
                final = code
    return final, call_id


def start_call(
    did: str,
    caller: str = DEFAULT_CALLER,
    *,
    hangup_after_ms: int | None = 1500,
    answer_wait_ms: int = 40000,
    hold_ms: int = 500,
    diversion: str | None = None,
    diversion_reason: str = "no-answer",
    anonymous: bool = False,
    timeout: float = 60,
    workdir: Path | None = None,
    source_ip: str = CARRIER_IP,
) -> CallProcess:
    """Start an inbound call from the carrier (127.0.0.2) to ``did``; don't wait.

    hangup_after_ms: the caller CANCELs this long after the INVITE (hangs up while it
        rings); None: wait for the final answer instead (up to ``answer_wait_ms``), ACK it,
        and if it was a 200 hold the call ``hold_ms`` then send BYE.
    diversion: a forwarding number, sent as ``Diversion: <sip:NUMBER@127.0.0.2>;reason=...``
    anonymous: From "Anonymous" <sip:anonymous@anonymous.invalid> (no P-Asserted-Identity).
    source_ip: where the INVITE comes from; 127.0.0.3 makes it a call placed by phone1.
    """
    wd = workdir or Path(tempfile.mkdtemp(prefix="callcatch-call-"))
    paths = {
        "stdout": wd / "uac.stdout",
        "stderr": wd / "uac.stderr",
        "messages": wd / "uac_messages.log",
        "errors": wd / "uac_errors.log",
        "log": wd / "uac_logs.log",
    }
    if anonymous:
        from_display, from_user, from_host, contact_user = (
            "Anonymous", "anonymous", "anonymous.invalid", "anonymous",
        )  # fmt: skip
    else:
        from_display, from_user, from_host, contact_user = caller, caller, source_ip, caller
    if diversion:
        extra = f"Diversion: <sip:{diversion}@{CARRIER_IP}>;reason={diversion_reason}"
    else:
        extra = "X-Callcatch-Test: 1"
    if hangup_after_ms is None:
        scenario, vars_ = "uac_answer.xml", ["-set", "hold_ms", str(hold_ms)]
    else:
        scenario, vars_ = "uac_cancel.xml", ["-set", "hangup_ms", str(hangup_after_ms)]
    cmd = [
        _SIPP,
        "-sf", str(SIPP_DIR / scenario),
        "-i", source_ip,
        "-mi", source_ip,
        "-m", "1",
        "-l", "1",
        *vars_,
        "-key", "caller", contact_user,
        "-key", "did", did,
        "-key", "from_display", from_display,
        "-key", "from_user", from_user,
        "-key", "from_host", from_host,
        "-key", "extra_header", extra,
        "-recv_timeout", str(answer_wait_ms),
        "-timeout", f"{max(1, int(timeout))}s",
        "-timeout_error",
        "-nostdin",
        "-trace_msg", "-message_file", str(paths["messages"]),
        "-trace_err", "-error_file", str(paths["errors"]),
        "-trace_logs", "-log_file", str(paths["log"]),
        f"{PBX_HOST}:{SIP_PORT}",
    ]  # fmt: skip
    started = time.time()
    with open(paths["stdout"], "wb") as out, open(paths["stderr"], "wb") as err:
        proc = CallProcess(cmd, cwd=wd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    proc.workdir = wd
    proc.started_at = started
    proc.call_timeout = timeout + 5
    proc._paths = paths
    return proc


def call(
    did: str,
    caller: str = DEFAULT_CALLER,
    *,
    hangup_after_ms: int | None = 1500,
    answer_wait_ms: int = 40000,
    hold_ms: int = 500,
    diversion: str | None = None,
    diversion_reason: str = "no-answer",
    anonymous: bool = False,
    timeout: float = 60,
    workdir: Path | None = None,
    source_ip: str = CARRIER_IP,
) -> CallResult:
    """Place one inbound call and wait for SIPp to finish (see :func:`start_call`)."""
    proc = start_call(
        did,
        caller,
        hangup_after_ms=hangup_after_ms,
        answer_wait_ms=answer_wait_ms,
        hold_ms=hold_ms,
        diversion=diversion,
        diversion_reason=diversion_reason,
        anonymous=anonymous,
        timeout=timeout,
        workdir=workdir,
        source_ip=source_ip,
    )
    try:
        return proc.result()
    finally:
        _stop_process(proc)


def read_cdr_csv(path: Path = CDR_CSV) -> list[list[str]]:
    """Rows of Master.csv (cdr_csv, loguniqueid=yes, loguserfield=yes): accountcode, src,
    dst, dcontext, clid, channel, dstchannel, lastapp, lastdata, start, answer, end,
    duration, billsec, disposition, amaflags, uniqueid, userfield."""
    import csv

    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]
