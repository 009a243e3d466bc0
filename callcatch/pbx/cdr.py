"""Backfill: calls missed while callcatch was stopped or disconnected, read from the CDR.

Asterisk writes a CDR when a call ends, whoever is listening. At start and after every AMI
reconnect the backfill reads the records of the look-back window, keeps the inbound calls
that nobody answered, and records those not recorded yet (the store's unique linkedid makes
the backfill idempotent: running it twice records nothing twice).

Sources: cdr_csv's ``Master.csv`` with ``loguniqueid=yes`` (the shipped ``cdr.conf``), and
cdr_sqlite3_custom with the shipped column list. The uniqueid of the inbound channel's CDR
is its linkedid, so a call the AMI watcher saw is never recorded again here.

A CDR cannot tell a caller who hung up while ringing from a ring timeout (both are
``NO ANSWER``): such calls are recorded as ``no-answer``. And a ring group built of Local
channels that ended in voicemail looks answered in the CDR; the backfill then treats it as
answered. Logging the linkedid of every leg (cdr_sqlite3_custom does) lifts the first part
of that: the legs can then be joined.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.config import CdrConfig
from callcatch.pbx.rules import LineMatcher, device_of, is_local
from callcatch.recorder import Recorder

log = logging.getLogger(__name__)

_UNIQUEID = re.compile(r"^(?:[\w.-]+-)?\d{9,}\.\d+$")
_CSV_COLUMNS = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
]
_SQLITE_COLUMNS = {
    "calldate",
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "duration",
    "disposition",
    "uniqueid",
}
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class CdrFormatError(Exception):
    """A CDR source is not in the shape the backfill reads."""


_DISPOSITIONS = {
    "NO ANSWER": Outcome.NO_ANSWER,
    "BUSY": Outcome.BUSY,
    "FAILED": Outcome.UNAVAILABLE,
    "CONGESTION": Outcome.UNAVAILABLE,
    "ANSWERED": Outcome.CALLER_HUNG_UP,  # answered by the dialplan (an IVR), not a person
}


@dataclass(frozen=True)
class CdrRow:
    key: str
    src: str
    clid: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    userfield: str
    start: datetime
    end: datetime
    disposition: str


def read_csv(path: Path, since: datetime, zone: ZoneInfo) -> Iterator[CdrRow]:
    """Rows of ``Master.csv`` that started at or after ``since``; rows without a
    uniqueid column cannot be matched to a linkedid and are skipped."""
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                fields = next(csv.reader([line]), [])
            except csv.Error as exc:
                log.debug("CDR %s:%d: unreadable line (%s), skipped", path, number, exc)
                continue
            if len(fields) < len(_CSV_COLUMNS) + 1:
                log.debug("CDR %s:%d: too few columns, skipped", path, number)
                continue
            row = dict(zip(_CSV_COLUMNS, fields, strict=False))
            uniqueid = fields[len(_CSV_COLUMNS)]
            userfield = (
                fields[len(_CSV_COLUMNS) + 1] if len(fields) > len(_CSV_COLUMNS) + 1 else ""
            )
            if not _UNIQUEID.match(uniqueid):
                log.debug("CDR %s:%d: no uniqueid column (loguniqueid=yes?)", path, number)
                continue
            try:
                start = _time(row["start"], zone)
                end = _time(row["end"], zone) if row["end"] else start
            except ValueError:
                log.debug("CDR %s:%d: unreadable time, skipped", path, number)
                continue
            if start < since:
                continue
            yield CdrRow(
                key=uniqueid,
                src=row["src"],
                clid=row["clid"],
                dst=row["dst"],
                dcontext=row["dcontext"],
                channel=row["channel"],
                dstchannel=row["dstchannel"],
                lastapp=row["lastapp"],
                userfield=userfield,
                start=start,
                end=end,
                disposition=row["disposition"].upper(),
            )


def read_sqlite(path: Path, since: datetime, zone: ZoneInfo) -> Iterator[CdrRow]:
    """Rows of cdr_sqlite3_custom's ``cdr`` table (see ``asterisk-conf/``)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        conn.row_factory = sqlite3.Row
        columns = {r[1] for r in conn.execute("PRAGMA table_info(cdr)")}
        missing = _SQLITE_COLUMNS - columns
        if missing:
            raise CdrFormatError(
                f"{path}: table cdr lacks {', '.join(sorted(missing))} "
                "(see asterisk-conf/cdr_sqlite3_custom.conf)"
            )
        key = "linkedid" if "linkedid" in columns else "uniqueid"
        for row in conn.execute("SELECT * FROM cdr"):
            try:
                start = _time(str(row["calldate"]), zone)
            except ValueError:
                continue
            if start < since:
                continue
            yield CdrRow(
                key=str(row[key]),
                src=str(row["src"] or ""),
                clid=str(row["clid"] or ""),
                dst=str(row["dst"] or ""),
                dcontext=str(row["dcontext"] or ""),
                channel=str(row["channel"] or ""),
                dstchannel=str(row["dstchannel"] or ""),
                lastapp=str(row["lastapp"] or ""),
                userfield=str(row["userfield"] or "") if "userfield" in columns else "",
                start=start,
                end=start + timedelta(seconds=float(row["duration"] or 0)),
                disposition=str(row["disposition"] or "").upper(),
            )


def _time(text: str, zone: ZoneInfo) -> datetime:
    return datetime.strptime(text.strip(), _TIME_FORMAT).replace(tzinfo=zone).astimezone(UTC)


def _caller_name(clid: str) -> str:
    name, _, _ = clid.partition("<")
    return name.strip().strip('"')


def _did(row: CdrRow) -> str | None:
    """The number called: the shipped dialplan keeps it in the userfield, because the
    CDR's dst column follows the dialplan into ``callcatch-ring,s``."""
    for candidate in (row.userfield, row.dst):
        if candidate and candidate[-1].isdigit():
            return candidate
    return None


def calls_from(
    rows: Iterable[CdrRow], lines: LineMatcher, forwarded_contexts: Iterable[str]
) -> list[CallRecord]:
    """Group rows by call and decide each inbound one."""
    forwarded = set(forwarded_contexts)
    groups: dict[str, list[CdrRow]] = {}
    for row in rows:
        if lines.line_of(row.channel) is not None:
            groups.setdefault(row.key, []).append(row)
    calls = []
    for key, group in groups.items():
        group.sort(key=lambda r: r.start)
        first = group[0]
        outcome, signal = _outcome(group, forwarded)
        calls.append(
            CallRecord(
                linkedid=key,
                caller=first.src,
                caller_name=_caller_name(first.clid),
                did=_did(first),
                forwarded_from=None,
                line=lines.line_of(first.channel) or device_of(first.channel),
                started_at=first.start,
                ended_at=max(r.end for r in group),
                outcome=outcome,
                detected_by=Detection.CDR_BACKFILL,
                signal=signal,
            )
        )
    return calls


def _outcome(group: list[CdrRow], forwarded: set[str]) -> tuple[Outcome, str]:
    if any(r.dcontext in forwarded or r.lastapp.lower() == "stasis" for r in group):
        return Outcome.NO_ANSWER, "cdr-forwarded"
    for row in group:
        if row.disposition == "ANSWERED" and row.dstchannel and row.lastapp.lower() != "voicemail":
            # A Local channel that answered may hide voicemail behind it; count it answered
            # rather than text someone a person already spoke to.
            return Outcome.ANSWERED, "cdr" if not is_local(row.dstchannel) else "cdr-local"
    if any(r.lastapp.lower() == "voicemail" for r in group):
        return Outcome.VOICEMAIL, "cdr"
    return _DISPOSITIONS.get(group[-1].disposition, Outcome.NO_ANSWER), "cdr"


class Backfill:
    def __init__(self, config: CdrConfig, lines: LineMatcher, recorder: Recorder) -> None:
        self.config = config
        self.lines = lines
        self.recorder = recorder
        self._running = asyncio.Lock()

    def read(self) -> list[CallRecord]:
        """Every inbound call in the look-back window (blocking: run it on a thread)."""
        since = datetime.now(UTC) - timedelta(hours=self.config.lookback_hours)
        zone = ZoneInfo(self.config.timezone)
        rows: list[CdrRow] = []
        sources = [
            (self.config.csv_path, read_csv),
            (self.config.sqlite_path, read_sqlite),
        ]
        for path, reader in sources:
            if path is None:
                continue
            try:
                rows.extend(reader(path, since, zone))
            except FileNotFoundError:
                log.info("CDR backfill: %s does not exist yet", path)
            except (OSError, sqlite3.Error, CdrFormatError) as exc:
                log.warning("CDR backfill: cannot read %s: %s", path, exc)
        return calls_from(rows, self.lines, self.config.forwarded_contexts)

    async def run_once(self) -> int:
        """Record the calls the CDR knows and the store does not; returns how many."""
        async with self._running:
            return await self._run_once()

    async def _run_once(self) -> int:
        calls = await asyncio.to_thread(self.read)
        known = await self.recorder.store.known_linkedids([c.linkedid for c in calls])
        recovered = 0
        for call in calls:
            if call.linkedid not in known and await self.recorder.record(call):
                recovered += 1
        log.info("CDR backfill: %d call(s) in the window, %d recovered", len(calls), recovered)
        return recovered
