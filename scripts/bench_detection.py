"""How fast and how reliably callcatch records missed calls on the real Asterisk 22.

Run from the repository root, as root (it starts the test PBX in its chroot)::

    /work/venv/bin/python scripts/bench_detection.py   # or .venv/bin/python

It starts Asterisk fresh (scripts/asterisk.sh) and ``callcatch run`` in a temporary
directory (tests/conftest.py's ``write_config``, log level INFO), then:

a. latency: ``--sequential`` (default 50) missed calls one after the other, each from its
   own caller (+12125558000 upward) to DID 5550101; phone1 (SIPp UAS on :5081) rings and the
   caller CANCELs after ~300 ms. Latency = the call's ``recorded_at`` in the store minus the
   wall-clock time SIPp sent the CANCEL.
b. burst: ``--burst`` (default 100) missed calls from distinct callers (+12125558100 upward)
   started at ``--rate`` per second (default 10), each CANCELled after ~1 s, then every one
   must be in the store exactly once.

Exits 1 if a call is missing or recorded twice (or the daemon does not exit 0 on SIGTERM),
2 if the rig itself failed. The daemon and Asterisk are stopped at the end in any case.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, write_config  # noqa: E402
from tests.pbx import Asterisk, CallProcess, CallResult, Phone, call, start_call  # noqa: E402

DID = "5550101"
SEQUENTIAL_BASE = 12125558000
BURST_BASE = 12125558100


@dataclass
class Sample:
    caller: str
    result: CallResult
    latency_ms: float | None = None


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (the value below which ``pct`` % of the samples lie)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def fmt_ms(value: float) -> str:
    return f"{value:.0f} ms"


def machine(asterisk: Asterisk | None) -> list[str]:
    """What the figures were measured on (without the PBX lines when ``asterisk`` is None)."""
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    git = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    lines = [
        f"callcatch: {git.stdout.strip() or '?'} (git describe --always --dirty)",
        f"CPU:      {cpu}",
        f"cores:    {os.cpu_count()}",
        f"RAM:      {ram}",
        f"kernel:   {platform.system()} {platform.release()}",
        f"Python:   {platform.python_version()} ({sys.executable})",
    ]
    if asterisk is not None:
        try:
            version = asterisk.cli("core show version").strip()
        except Exception as exc:  # the figures still matter without it
            version = f"? ({exc})"
        sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False)
        sipp_version = next((w for w in sipp.stdout.split() if w.startswith("v")), "?")
        lines += [f"Asterisk: {version}", f"SIPp:     {sipp_version}"]
    return [*lines, f"load:     {load} (1/5/15 min, at the start)"]


class StoreReader:
    """Reads the daemon's store (WAL: reading while it writes is fine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def rows(self) -> list[sqlite3.Row]:
        if self.conn is None:
            if not self.path.exists():
                return []
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            self.conn.row_factory = sqlite3.Row
        return self.conn.execute(
            "SELECT linkedid, caller_e164, outcome, missed, detected_by, recorded_at FROM calls"
        ).fetchall()

    def wait_for(self, callers: set[str], timeout: float) -> dict[str, list[sqlite3.Row]]:
        """Rows of those callers, once each has one (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            found: dict[str, list[sqlite3.Row]] = {}
            for row in self.rows():
                if row["caller_e164"] in callers:
                    found.setdefault(row["caller_e164"], []).append(row)
            if len(found) == len(callers) or time.monotonic() > deadline:
                return found
            time.sleep(0.01)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def recorded_ts(row: sqlite3.Row) -> float:
    return datetime.fromisoformat(row["recorded_at"]).timestamp()


def latency_of(sample: Sample, rows: list[sqlite3.Row]) -> None:
    if rows and sample.result.hangup_sent_at is not None:
        sample.latency_ms = (recorded_ts(rows[0]) - sample.result.hangup_sent_at) * 1000


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    return (
        f"p50 {fmt_ms(statistics.median(latencies))}, "
        f"p95 {fmt_ms(percentile(latencies, 95))}, max {fmt_ms(max(latencies))}"
    )


def wait_phone(phone: Phone) -> int | None:
    """The phone's exit code once it has handled all its calls (None: still running)."""
    try:
        return phone.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None


def run_sequential(store: StoreReader, count: int, hangup_ms: int, workdir: Path) -> bool:
    print(
        f"\n== a. latency: {count} sequential missed calls to {DID}, CANCEL after ~{hangup_ms} ms"
    )
    samples: list[Sample] = []
    failures = 0
    workdir.mkdir(parents=True, exist_ok=True)
    phone = Phone(port=5081, mode="ring", calls=count, timeout=count * 5 + 60, workdir=workdir)
    with phone:
        for i in range(count):
            caller = f"+{SEQUENTIAL_BASE + i}"
            (wd := workdir / f"call{i:03d}").mkdir()
            result = call(DID, caller, hangup_after_ms=hangup_ms, timeout=20, workdir=wd)
            sample = Sample(caller, result)
            samples.append(sample)
            if not result.ok or result.hangup_sent_at is None:
                failures += 1
                print(f"  call {i} ({caller}): SIPp exited {result.returncode}, see {result.log}")
                continue
            found = store.wait_for({caller}, timeout=5)
            latency_of(sample, found.get(caller, []))
        phone_exit = wait_phone(phone)
    callers = {s.caller for s in samples}
    found = store.wait_for(callers, timeout=5)
    missing = sorted(callers - found.keys())
    duplicates = sum(len(rows) - 1 for rows in found.values())
    latencies = [s.latency_ms for s in samples if s.latency_ms is not None]
    outcomes = Counter(rows[0]["outcome"] for rows in found.values())
    print(f"  n = {len(latencies)} (calls placed {len(samples)}, SIPp failures {failures})")
    print(f"  phone1 (SIPp UAS) exit code {phone_exit} after {count} calls")
    print(f"  CANCEL -> recorded: {summary(latencies)}")
    print(f"  recorded {len(found)}, missing {len(missing)}, duplicates {duplicates}")
    print(f"  outcomes: {dict(outcomes)}")
    if missing:
        print(f"  missing callers: {missing}")
    return not missing and duplicates == 0 and failures == 0


def run_burst(store: StoreReader, count: int, rate: float, hangup_ms: int, workdir: Path) -> bool:
    print(
        f"\n== b. burst: {count} missed calls from distinct callers at {rate:g}/s to {DID},"
        f" CANCEL after ~{hangup_ms} ms"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    results, phone_exit = place_burst(count, rate, hangup_ms, workdir, BURST_BASE)
    samples = [Sample(caller, result) for caller, result in results]
    failures = [s for s in samples if not s.result.ok or s.result.hangup_sent_at is None]
    callers = {s.caller for s in samples}
    found = store.wait_for(callers, timeout=15)
    for sample in samples:
        latency_of(sample, found.get(sample.caller, []))
    missing = sorted(callers - found.keys())
    duplicates = sum(len(rows) - 1 for rows in found.values())
    latencies = [s.latency_ms for s in samples if s.latency_ms is not None]
    started = [s.result.started_at for s in samples]
    cancels = [s.result.hangup_sent_at for s in samples if s.result.hangup_sent_at is not None]
    outcomes = Counter(rows[0]["outcome"] for rows in found.values())
    print(f"  calls placed:   {len(samples)} (SIPp failures {len(failures)})")
    print(f"  phone1 (SIPp UAS) exit code {phone_exit} after {count} calls")
    print(f"  calls recorded: {len(found)}")
    print(f"  duplicates:     {duplicates}")
    print(f"  missing:        {len(missing)}")
    print(f"  burst span:     {max(started) - min(started):.2f} s from first to last INVITE")
    if cancels:
        print(f"  CANCEL span:    {max(cancels) - min(cancels):.2f} s from first to last CANCEL")
    print(f"  CANCEL -> recorded: n = {len(latencies)}, {summary(latencies)}")
    print(f"  outcomes: {dict(outcomes)}")
    for sample in failures[:5]:
        print(
            f"  SIPp failure {sample.caller}: exit {sample.result.returncode}, {sample.result.log}"
        )
    if missing:
        print(f"  missing callers: {missing}")
    return not missing and duplicates == 0


def log_gaps(daemon: Daemon, store: StoreReader) -> None:
    """Where the time goes inside the daemon: its log line for a call vs recorded_at."""
    stamps: dict[str, float] = {}
    pattern = re.compile(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO callcatch\.recorder: call (\S+):"
    )
    for line in daemon.log().splitlines():
        m = pattern.match(line)
        if m:
            moment = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")  # noqa: DTZ007 local
            stamps[m.group(2)] = moment.timestamp()
    gaps = [
        (stamps[row["linkedid"]] - recorded_ts(row)) * 1000
        for row in store.rows()
        if row["linkedid"] in stamps
    ]
    if gaps:
        print(
            f"\n  (daemon log line after recorded_at: n = {len(gaps)}, "
            f"p50 {fmt_ms(statistics.median(gaps))}, max {fmt_ms(max(gaps))})"
        )


def stop_daemon(daemon: Daemon, notes: list[str]) -> bool:
    """SIGTERM the daemon; True when it exited 0. What happened goes to ``notes``."""
    try:
        code = daemon.stop(signal.SIGTERM)
    except AssertionError as exc:
        code = -1
        notes.append(str(exc))
    notes.append(f"daemon stopped (SIGTERM), exit code {code}")
    return code == 0


def place_burst(
    count: int, rate: float, hangup_ms: int, workdir: Path, base: int
) -> tuple[list[tuple[str, CallResult]], int | None]:
    """``count`` calls from +``base`` upward to DID, started at ``rate`` a second (one SIPp
    process each) to phone1 ringing, each CANCELled after ``hangup_ms``: every caller with
    its call's result, and phone1's exit code."""
    procs: list[tuple[str, CallProcess]] = []
    phone = Phone(port=5081, mode="ring", calls=count, timeout=count / rate + 90, workdir=workdir)
    with phone:
        t0 = time.monotonic()
        try:
            for i in range(count):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                caller = f"+{base + i}"
                (wd := workdir / f"call{i:03d}").mkdir()
                procs.append(
                    (caller, start_call(DID, caller, hangup_after_ms=hangup_ms, workdir=wd))
                )
            results = [(caller, proc.result(timeout=30)) for caller, proc in procs]
            return results, wait_phone(phone)
        finally:
            for _, proc in procs:
                proc.stop()


def stop_asterisk(asterisk: Asterisk, notes: list[str]) -> None:
    try:
        asterisk.stop()
        notes.append("Asterisk stopped")
    except Exception as exc:
        notes.append(f"Asterisk stop failed: {exc!r}")


def verdict(ok: bool, rig_failed: bool, tmp: Path, keep: bool, failure: str) -> int:
    """Print the result line and return the exit status (0 pass, 1 fail, 2 rig failure);
    the temporary directory goes unless the run failed or ``keep``."""
    if rig_failed:
        print(f"RESULT: RIG FAILURE (files kept in {tmp})")
        return 2
    print("RESULT:", "PASS" if ok else f"FAIL ({failure})")
    if ok and not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"files kept in {tmp}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequential", type=int, default=50, help="calls in part a (>= 1)")
    parser.add_argument("--burst", type=int, default=100, help="calls in part b (0: skip)")
    parser.add_argument("--rate", type=float, default=10.0, help="burst calls started per s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_detection.py: must run as root (it starts Asterisk in its chroot)")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="callcatch-bench-"))
    asterisk = Asterisk()
    daemon: Daemon | None = None
    store: StoreReader | None = None
    ok, rig_failed = True, False
    started = time.monotonic()
    try:
        print(f"callcatch detection benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
        asterisk.start(fresh=True)
        print("\n".join(machine(asterisk)))
        daemon = Daemon(tmp, write_config(tmp, level='"INFO"'))
        daemon.start()
        store = StoreReader(tmp / "callcatch.db")
        ok &= run_sequential(store, args.sequential, 300, tmp / "seq")
        if args.burst:
            asterisk.wait_no_channels(timeout=15)
            ok &= run_burst(store, args.burst, args.rate, 1000, tmp / "burst")
        log_gaps(daemon, store)
        rows = store.rows()
        linkedids = Counter(row["linkedid"] for row in rows)
        print(f"\n  store: {len(rows)} rows, {len(linkedids)} distinct linkedids")
    except Exception as exc:
        rig_failed = True
        print(f"\nbench_detection.py: the rig failed: {exc!r}")
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
        stop_asterisk(asterisk, notes)
        notes.append(f"total run time {time.monotonic() - started:.0f} s")
        print("\n".join(notes))
    return verdict(ok, rig_failed, tmp, args.keep, "missing, duplicated or unclean exit")


if __name__ == "__main__":
    sys.exit(main())
