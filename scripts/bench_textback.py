"""How fast callcatch texts a missed caller back, and how it holds up under a burst, on the
real Asterisk 22 and the modem simulator.

Run from the repository root, as root (it starts the test PBX in its chroot)::

    /work/venv/bin/python scripts/bench_textback.py   # or .venv/bin/python

It starts Asterisk fresh (scripts/asterisk.sh), the modem simulator (tests/modem_process.py,
a pty where the USB modem would be) and ``callcatch run`` in a temporary directory (the
shipped example configuration through tests/daemon.py's ``write_config``, as
tests/test_pbx_textback.py sets it: open all day, the simulator's link and PIN,
``cdr.lookback_hours = 0``; and log level INFO, ``textback.delay_seconds = 0``,
``textback.per_hour = 1000`` so that the hourly flood limit of 60 does not cut the run short),
then:

a. latency: ``--latency`` (default 50) missed calls one after the other, each from its own
   caller (+12125556000 upward) to DID 5550101; phone1 (SIPp UAS on :5081) rings and the
   caller CANCELs after ~300 ms. Modem pace 0, simulator cmgs_delay 0.05 s. Latency = the
   moment the AT+CMGS PDU for that caller reached the simulated modem minus the wall-clock
   time SIPp sent the CANCEL. The simulator stamps a PDU (``at``, CLOCK_MONOTONIC) only after
   its cmgs_delay, when the simulated network answers, so the arrival is taken as
   ``at - cmgs_delay`` (converted to wall clock through an offset measured here).
b. burst: the daemon is restarted with ``modem.pace_seconds = --pace`` (default 0.2) and the
   simulator's cmgs_delay set to ``--cmgs-delay`` (default 0.3). One warm-up missed call
   (+12125556099), then ``--burst`` (default 100) missed calls from distinct callers
   (+12125556100 upward) started at ``--rate`` per second (default 10), each CANCELled after
   ~1 s; then it waits until every text has been sent and checks that each caller was texted
   exactly once, in the order the calls were recorded. The daemon's RSS (VmRSS) is sampled
   at rest, every 0.5 s during the burst, and after.

Exits 1 if a text is missing or duplicated (or the daemon does not exit 0 on SIGTERM), 2 if
the rig itself failed. The daemon, the simulator and Asterisk are stopped at the end in any
case.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_detection import (  # noqa: E402
    fmt_ms,
    machine,
    percentile,
    place_burst,
    stop_asterisk,
    stop_daemon,
    summary,
    verdict,
    wait_phone,
)

from tests.daemon import Daemon, write_config  # noqa: E402
from tests.modem_process import SIM_PIN, ModemProcess  # noqa: E402
from tests.pbx import Asterisk, CallResult, Phone, call  # noqa: E402

DID = "5550101"
LATENCY_BASE = 12125556000
WARMUP_CALLER = "+12125556099"
BURST_BASE = 12125556100
ALL_DAY = '"00:00-24:00"'
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
LATENCY_CMGS_DELAY = 0.05
TARGET_P95_MS = 500.0
FLAT_MIB = 5.0


# --------------------------------------------------------------------------- clocks


def wall_minus_monotonic() -> float:
    """time.time() - time.monotonic() in this process, from the tightest of 50 readings.
    CLOCK_MONOTONIC is system-wide, so it converts the simulator's stamps to wall clock."""
    best: tuple[float, float] | None = None
    for _ in range(50):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    assert best is not None
    return best[1]


# --------------------------------------------------------------------------- the rig


def daemon_config(directory: Path, modem: ModemProcess, pace: float) -> Path:
    settings = {f"hours__{day}": ALL_DAY for day in DAYS}
    settings.update(
        log__level='"INFO"',
        modem__port=f'"{modem.link}"',
        modem__pin=f'"{SIM_PIN}"',
        modem__pace_seconds=f"{pace:g}",
        textback__delay_seconds="0",
        textback__per_hour="1000",
        cdr__lookback_hours="0",
    )
    return write_config(directory, **settings)


READY = ("AMI connected", "ARI connected", "modem sim1: ready")


class StoreReader:
    """Reads the daemon's store (WAL: reading while it writes is fine, and blocks nobody)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        if self.conn is None:
            if not self.path.exists():
                return []
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            self.conn.row_factory = sqlite3.Row
        return self.conn.execute(sql, params).fetchall()

    def calls(self, callers: set[str]) -> list[sqlite3.Row]:
        """The calls of ``callers``, in the order they were committed."""
        rows = self.query(
            "SELECT id, linkedid, caller_e164, outcome, missed, recorded_at, textback, "
            "textback_reason FROM calls ORDER BY id"
        )
        return [r for r in rows if r["caller_e164"] in callers]

    def textbacks(self, callers: set[str]) -> list[sqlite3.Row]:
        rows = self.query(
            "SELECT id, linkedid, number, state, attempts, created_at, sent_at, reason "
            "FROM outbox WHERE kind = 'textback' ORDER BY id"
        )
        return [r for r in rows if r["number"] in callers]

    def wait_texts_done(self, callers: set[str], timeout: float, poll: float = 0.01) -> bool:
        """Until every caller has a text-back that is sent or failed (False at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            done = {
                r["number"] for r in self.textbacks(callers) if r["state"] in ("sent", "failed")
            }
            if done >= callers:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(poll)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def iso_ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@dataclass
class DaemonLog:
    """Moments (wall clock, ms) of the daemon's INFO lines along the text-back path."""

    decided: dict[str, float] = field(default_factory=dict)  # linkedid: "call X: missed"
    queued: dict[str, float] = field(default_factory=dict)  # linkedid: "text-back queued"
    sent: dict[int, float] = field(default_factory=dict)  # outbox id: "sent by"
    problems: list[str] = field(default_factory=list)  # WARNING and worse


_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (\w+) ([\w.]+): (.*)$")


def read_daemon_log(path: Path) -> DaemonLog:
    result = DaemonLog()
    if not path.exists():
        return result
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _LOG.match(line)
        if not m:
            continue
        stamp, level, logger, message = m.groups()
        # The daemon logs local time; strptime gives a naive local datetime.
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()  # noqa: DTZ007
        if level in ("WARNING", "ERROR", "CRITICAL"):
            result.problems.append(line)
        if logger == "callcatch.recorder" and (d := re.match(r"call (\S+): missed", message)):
            result.decided[d.group(1)] = moment
        elif logger == "callcatch.textback" and (
            q := re.match(r"call (\S+): text-back queued", message)
        ):
            result.queued[q.group(1)] = moment
        elif logger == "callcatch.sms.outbox" and (
            s := re.match(r"outbox (\d+): sent by", message)
        ):
            result.sent[int(s.group(1))] = moment
    return result


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class RssSampler(threading.Thread):
    """VmRSS of one process every ``interval`` s, from start() until stop()."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        while True:
            kib = rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def rss_at_rest(pid: int, samples: int = 5, interval: float = 0.5) -> int:
    values = []
    for _ in range(samples):
        kib = rss_kib(pid)
        if kib is not None:
            values.append(kib)
        time.sleep(interval)
    return int(statistics.median(values))


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


@dataclass
class Rig:
    tmp: Path
    asterisk: Asterisk
    modem: ModemProcess
    daemon: Daemon
    store: StoreReader


def pdus_by_number(modem: ModemProcess) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for item in modem.sent():
        found.setdefault(item["number"], []).append(item)
    return found


def stage(name: str, values: list[float]) -> None:
    print(f"    {name:<44} n = {len(values):>3}, {summary(values)}")


def pct_line(values: list[float]) -> str:
    return f"n = {len(values)}, {summary(values)}"


# --------------------------------------------------------------------------- a. latency


@dataclass
class Sample:
    caller: str
    result: CallResult
    arrival: float | None = None  # wall clock: the PDU reached the simulated modem
    accepted: float | None = None  # wall clock: the simulated network answered


def run_latency(rig: Rig, count: int, hangup_ms: int) -> bool:
    print(
        f"\n== a. latency: {count} sequential missed calls to {DID}, CANCEL after ~{hangup_ms}"
        f" ms; modem pace 0, simulator cmgs_delay {LATENCY_CMGS_DELAY:g} s"
    )
    workdir = rig.tmp / "latency"
    workdir.mkdir()
    samples: list[Sample] = []
    failures = 0
    offset_before = wall_minus_monotonic()
    phone = Phone(port=5081, mode="ring", calls=count, timeout=count * 6 + 60, workdir=workdir)
    with phone:
        for i in range(count):
            caller = f"+{LATENCY_BASE + i}"
            (wd := workdir / f"call{i:03d}").mkdir()
            result = call(DID, caller, hangup_after_ms=hangup_ms, timeout=20, workdir=wd)
            samples.append(Sample(caller, result))
            if not result.ok or result.hangup_sent_at is None:
                failures += 1
                print(f"  call {i} ({caller}): SIPp exited {result.returncode}, see {result.log}")
                continue
            rig.store.wait_texts_done({caller}, timeout=10)
        phone_exit = wait_phone(phone)
    callers = {s.caller for s in samples}
    rig.store.wait_texts_done(callers, timeout=5)
    time.sleep(1.0)  # a second text, if any, would be at the modem by now
    offset_after = wall_minus_monotonic()
    offset = (offset_before + offset_after) / 2
    pdus = pdus_by_number(rig.modem)
    for sample in samples:
        if sample.caller in pdus:
            accepted = pdus[sample.caller][0]["at"] + offset
            sample.accepted = accepted
            sample.arrival = accepted - LATENCY_CMGS_DELAY
    cancels = {s.caller: s.result.hangup_sent_at for s in samples}
    latencies = [
        (s.arrival - s.result.hangup_sent_at) * 1000
        for s in samples
        if s.arrival is not None and s.result.hangup_sent_at is not None
    ]
    raw = [
        (s.accepted - s.result.hangup_sent_at) * 1000
        for s in samples
        if s.accepted is not None and s.result.hangup_sent_at is not None
    ]
    texted = {c: len(pdus.get(c, [])) for c in callers}
    missing = sorted(c for c, n in texted.items() if n == 0)
    duplicates = sum(n - 1 for n in texted.values() if n > 1)
    calls = rig.store.calls(callers)
    outcomes = Counter(r["outcome"] for r in calls)
    states = Counter(r["state"] for r in rig.store.textbacks(callers))
    print(f"  n = {len(latencies)} (calls placed {len(samples)}, SIPp failures {failures})")
    print(f"  phone1 (SIPp UAS) exit code {phone_exit} after {count} calls")
    print(f"  CANCEL -> PDU at the modem: {summary(latencies)}")
    verdict = "met" if latencies and percentile(latencies, 95) <= TARGET_P95_MS else "MISSED"
    print(f"  target p95 <= {TARGET_P95_MS:.0f} ms: {verdict}")
    print(
        f"  (CANCEL -> simulated network answered, cmgs_delay included: {summary(raw)}; "
        f"clock offset drift {abs(offset_after - offset_before) * 1000:.2f} ms)"
    )
    print(f"  calls recorded {len(calls)}, outcomes {dict(outcomes)}")
    print(f"  texts: {dict(states)}; callers texted once {sum(n == 1 for n in texted.values())}")
    print(f"  missing {len(missing)}, duplicates {duplicates}")
    if missing:
        print(f"  missing callers: {missing}")
    breakdown(rig, calls, cancels, {s.caller: s.arrival for s in samples}, offset)
    return not missing and duplicates == 0 and failures == 0


def breakdown(
    rig: Rig,
    calls: list[sqlite3.Row],
    cancels: dict[str, float | None],
    arrivals: dict[str, float | None],
    offset: float,
) -> None:
    """Where the time goes, from the daemon's log lines (ms resolution) and the store."""
    log = read_daemon_log(rig.daemon.log_path)
    outbox = {r["linkedid"]: r for r in rig.store.textbacks({r["caller_e164"] for r in calls})}
    parts: dict[str, list[float]] = {}

    def add(name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None:
            parts.setdefault(name, []).append((end - start) * 1000)

    for row in calls:
        linkedid, caller = row["linkedid"], row["caller_e164"]
        text = outbox.get(linkedid)
        cancel, arrival = cancels.get(caller), arrivals.get(caller)
        decided, queued = log.decided.get(linkedid), log.queued.get(linkedid)
        sent_line = log.sent.get(text["id"]) if text is not None else None
        add("CANCEL -> recorded_at (store)", cancel, iso_ts(row["recorded_at"]))
        add("CANCEL -> decision line (log)", cancel, decided)
        add('decision line -> "text-back queued" (log)', decided, queued)
        add('"text-back queued" -> PDU at the modem', queued, arrival)
        if arrival is not None:
            accepted = arrival + LATENCY_CMGS_DELAY
            add('network answered -> "sent by" (log)', accepted, sent_line)
    print("  where the time goes (log lines have ms resolution, truncated):")
    for name, values in parts.items():
        stage(name, values)


# --------------------------------------------------------------------------- b. burst


def restart_for_burst(rig: Rig, pace: float, cmgs_delay: float) -> bool:
    code = rig.daemon.stop(signal.SIGTERM)
    print(f"\n  daemon restarted for b (SIGTERM exit code {code}) with modem pace {pace:g} s")
    rig.daemon.config = daemon_config(rig.tmp, rig.modem, pace)
    rig.modem.command(f"cmgs_delay {cmgs_delay}")
    rig.daemon.start(ready=READY)
    return code == 0


def warm_up(rig: Rig) -> None:
    """One missed call through the whole path, so that "at rest" is a daemon that has
    already sent a text (imports, caches and the first PDU are behind it)."""
    wd = rig.tmp / "warmup"
    wd.mkdir()
    with Phone(port=5081, mode="ring", calls=1, timeout=60, workdir=wd):
        result = call(DID, WARMUP_CALLER, hangup_after_ms=300, timeout=20, workdir=wd)
    if not result.ok:
        print(f"  warm-up call: SIPp exited {result.returncode}, see {result.log}")
    ok = rig.store.wait_texts_done({WARMUP_CALLER}, timeout=15)
    print(f"  warm-up call from {WARMUP_CALLER}: text {'sent' if ok else 'NOT sent'}")


def out_of_order(expected: list[str], actual: list[str]) -> tuple[int, int, list[int]]:
    """(texts out of place: len - longest run in recorded order, inverted pairs,
    positions in ``actual`` where the recorded rank goes down)."""
    rank = {c: i for i, c in enumerate(expected)}
    ranks = [rank[c] for c in actual if c in rank]
    tails: list[int] = []  # longest increasing subsequence, patience style
    for r in ranks:
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if tails[mid] < r:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(tails):
            tails.append(r)
        else:
            tails[lo] = r
    inversions = sum(
        1 for i in range(len(ranks)) for j in range(i + 1, len(ranks)) if ranks[i] > ranks[j]
    )
    drops = [i for i in range(1, len(ranks)) if ranks[i] < ranks[i - 1]]
    return len(ranks) - len(tails), inversions, drops


def run_burst(
    rig: Rig, count: int, rate: float, hangup_ms: int, pace: float, cmgs_delay: float
) -> bool:
    print(
        f"\n== b. burst: {count} missed calls from distinct callers at {rate:g}/s to {DID},"
        f" CANCEL after ~{hangup_ms} ms; modem pace {pace:g} s, simulator cmgs_delay"
        f" {cmgs_delay:g} s"
    )
    assert rig.daemon.process is not None
    pid = rig.daemon.process.pid
    warm_up(rig)
    rig.asterisk.wait_no_channels(timeout=15)
    time.sleep(1.0)
    rest = rss_at_rest(pid)
    workdir = rig.tmp / "burst"
    workdir.mkdir()
    sampler = RssSampler(pid)
    sampler.start()
    offset_before = wall_minus_monotonic()
    t0 = time.monotonic()  # the first call starts now
    try:
        results, phone_exit = place_burst(count, rate, hangup_ms, workdir, BURST_BASE)
        samples = [Sample(caller, result) for caller, result in results]
        callers = {s.caller for s in samples}
        budget = count * (pace + cmgs_delay + 0.5) + 60
        all_done = rig.store.wait_texts_done(callers, timeout=budget, poll=0.1)
        done_at = time.monotonic()
    finally:
        sampler.stop()
    time.sleep(2.0)  # a second text, if any, would be at the modem by now
    after = rss_at_rest(pid)
    offset_after = wall_minus_monotonic()
    offset = (offset_before + offset_after) / 2
    failures = [s for s in samples if not s.result.ok or s.result.hangup_sent_at is None]
    calls = rig.store.calls(callers)
    missed_calls = [r for r in calls if r["missed"]]
    outbox = rig.store.textbacks(callers)
    states = Counter(r["state"] for r in outbox)
    pdus = pdus_by_number(rig.modem)
    texted = {c: len(pdus.get(c, [])) for c in callers}
    missing = sorted(c for c, n in texted.items() if n == 0)
    duplicates = sum(n - 1 for n in texted.values() if n > 1)
    burst_pdus = sorted(
        (p for c in callers for p in pdus.get(c, [])), key=lambda p: (p["at"], p["mr"])
    )
    started = [s.result.started_at for s in samples]
    print(f"  calls placed:          {len(samples)} (SIPp failures {len(failures)})")
    print(f"  phone1 (SIPp UAS) exit code {phone_exit} after {count} calls")
    print(f"  burst span:            {max(started) - min(started):.2f} s first to last INVITE")
    print(f"  missed calls recorded: {len(missed_calls)} (rows {len(calls)})")
    print(f"  texts sent:            {len(burst_pdus)} at the modem; outbox {dict(states)}")
    print(f"  callers texted once:   {sum(n == 1 for n in texted.values())}")
    print(f"  duplicates:            {duplicates}")
    print(f"  missing:               {len(missing)}")
    if not all_done:
        print(f"  (not every text was sent or failed within {budget:.0f} s)")
    if missing:
        print(f"  missing callers: {missing}")

    # Order: the calls as committed (calls.id, i.e. recorded_at order) against the PDUs as
    # the modem accepted them, and against the decisions (outbox ids) in between.
    recorded = [r["caller_e164"] for r in missed_calls]
    decided = [r["number"] for r in outbox]
    at_modem = [p["number"] for p in burst_pdus]
    moved, inverted, drops = out_of_order(recorded, at_modem)
    moved_d, inverted_d, _ = out_of_order(recorded, decided)
    moved_m, inverted_m, _ = out_of_order(decided, at_modem)
    print(
        f"  order: {moved} text(s) out of the recorded order at the modem "
        f"({inverted} inverted pair(s)); decisions vs recorded: {moved_d} ({inverted_d}); "
        f"modem vs decisions: {moved_m} ({inverted_m})"
    )
    recorded_at = {r["caller_e164"]: r["recorded_at"] for r in missed_calls}
    for i in drops[:10]:
        a, b = at_modem[i - 1], at_modem[i]
        gap = (iso_ts(recorded_at[a]) - iso_ts(recorded_at[b])) * 1000
        print(
            f"    {b} (recorded {recorded_at[b][11:23]}) texted after {a} (recorded"
            f" {recorded_at[a][11:23]}): recorded {gap:.0f} ms apart"
        )
    if burst_pdus:
        first, last = burst_pdus[0]["at"], burst_pdus[-1]["at"]
        span = last - first
        per = span / (len(burst_pdus) - 1) if len(burst_pdus) > 1 else 0.0
        print(
            f"  first to last text:    {span:.2f} s for {len(burst_pdus)} texts; effective pace"
            f" {per:.3f} s a text ({60 / per if per else 0:.0f} a minute; configured"
            f" {pace:g} s pace + {cmgs_delay:g} s network = {pace + cmgs_delay:.3f} s)"
        )
        gaps = [(b["at"] - a["at"]) * 1000 for a, b in itertools.pairwise(burst_pdus)]
        if gaps:
            print(f"  gap between texts:     {summary(gaps)}, min {fmt_ms(min(gaps))}")
        waits = []
        cancels = {s.caller: s.result.hangup_sent_at for s in samples}
        for c in callers:
            if c in pdus and cancels.get(c) is not None:
                arrival = pdus[c][0]["at"] + offset - cmgs_delay
                waits.append((arrival - cancels[c]) * 1000)
        print(f"  CANCEL -> PDU at the modem (queueing): {pct_line(waits)}")
        last_cancel = max(c for c in cancels.values() if c is not None)
        print(f"  last text accepted {last + offset - last_cancel:.2f} s after the last CANCEL")

    values = [kib for _, kib in sampler.samples]
    peak = max([rest, after, *values])
    print(
        f"  daemon RSS (VmRSS):    at rest {mib(rest)}, peak {mib(peak)} "
        f"({len(values)} samples every 0.5 s over {done_at - t0:.0f} s), after {mib(after)}"
    )
    growth, bump = after - rest, peak - rest
    flat = abs(growth) <= FLAT_MIB * 1024
    print(
        f"  memory: {growth / 1024:+.1f} MiB after vs at rest, peak {bump / 1024:+.1f} MiB:"
        f" {'flat' if flat else 'NOT flat'} (threshold {FLAT_MIB:g} MiB)"
    )
    return not missing and duplicates == 0 and len(burst_pdus) == count


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=int, default=50, help="calls in part a (>= 1)")
    parser.add_argument("--burst", type=int, default=100, help="calls in part b (0: skip)")
    parser.add_argument("--rate", type=float, default=10.0, help="burst calls started per s")
    parser.add_argument("--pace", type=float, default=0.2, help="modem pace_seconds in b")
    parser.add_argument("--cmgs-delay", type=float, default=0.3, help="simulated network, b")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_textback.py: must run as root (it starts Asterisk in its chroot)")
        return 2
    if not 1 <= args.latency <= 99 or not 0 <= args.burst <= 100:
        print("bench_textback.py: --latency 1..99 and --burst 0..100 (the callers' ranges)")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="callcatch-bench-textback-"))
    asterisk = Asterisk()
    modem: ModemProcess | None = None
    daemon: Daemon | None = None
    store: StoreReader | None = None
    ok, rig_failed = True, False
    started = time.monotonic()
    try:
        print(f"callcatch text-back benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
        asterisk.start(fresh=True)
        print("\n".join(machine(asterisk)))
        modem = ModemProcess(tmp, cmgs_delay=LATENCY_CMGS_DELAY)
        daemon = Daemon(tmp, daemon_config(tmp, modem, pace=0))
        daemon.start(ready=READY)
        store = StoreReader(tmp / "callcatch.db")
        rig = Rig(tmp, asterisk, modem, daemon, store)
        ok &= run_latency(rig, args.latency, 300)
        if args.burst:
            asterisk.wait_no_channels(timeout=15)
            ok &= restart_for_burst(rig, args.pace, args.cmgs_delay)
            ok &= run_burst(rig, args.burst, args.rate, 1000, args.pace, args.cmgs_delay)
        everything = modem.sent()
        numbers = Counter(p["number"] for p in everything)
        print(
            f"\n  simulator: {len(everything)} PDUs accepted in all, to {len(numbers)} numbers,"
            f" most to one number {max(numbers.values(), default=0)}"
        )
        problems = read_daemon_log(daemon.log_path).problems
        print(f"  daemon log: {len(problems)} WARNING/ERROR line(s)")
        for line in problems[:10]:
            print(f"    {line}")
    except Exception as exc:
        rig_failed = True
        print(f"\nbench_textback.py: the rig failed: {exc!r}")
        traceback.print_exc(file=sys.stdout)
        if daemon is not None:
            print(daemon.log()[-3000:])
    finally:
        # Stop everything first, then report (printing may fail, e.g. a closed pipe).
        notes: list[str] = []
        if store is not None:
            store.close()
        if daemon is not None and daemon.process is not None:
            ok &= stop_daemon(daemon, notes)
        if modem is not None:
            modem.stop()
            notes.append(f"modem simulator stopped, exit code {modem.process.returncode}")
        stop_asterisk(asterisk, notes)
        notes.append(f"total run time {time.monotonic() - started:.0f} s")
        print("\n".join(notes))
    return verdict(ok, rig_failed, tmp, args.keep, "missing or duplicated text, or unclean exit")


if __name__ == "__main__":
    sys.exit(main())
