from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.config import CdrConfig
from callcatch.pbx.cdr import Backfill, calls_from, read_csv
from callcatch.pbx.rules import LineMatcher
from callcatch.recorder import Recorder
from callcatch.store import AsyncStore, Store

LINES = LineMatcher(["PJSIP/carrier", "DAHDI/"])
NOW = datetime.now(UTC).replace(microsecond=0)
FORMAT = "%Y-%m-%d %H:%M:%S"
TRUNK = "PJSIP/carrier-00000001"
PHONE = "PJSIP/phone1-00000002"


def cdr(
    uniqueid: str,
    *,
    channel: str = TRUNK,
    dstchannel: str = PHONE,
    lastapp: str = "Dial",
    lastdata: str = "PJSIP/phone1,25",
    disposition: str = "NO ANSWER",
    src: str = "2125550123",
    dst: str = "5551000",
    dcontext: str = "callcatch-ring",
    ago: timedelta = timedelta(minutes=30),
    duration: int = 25,
) -> dict[str, str]:
    start = NOW - ago
    answered = disposition == "ANSWERED"
    return {
        "accountcode": "",
        "src": src,
        "dst": dst,
        "dcontext": dcontext,
        "clid": f'"Jane Roe" <{src}>',
        "channel": channel,
        "dstchannel": dstchannel,
        "lastapp": lastapp,
        "lastdata": lastdata,
        "start": start.strftime(FORMAT),
        "answer": (start + timedelta(seconds=5)).strftime(FORMAT) if answered else "",
        "end": (start + timedelta(seconds=duration)).strftime(FORMAT),
        "duration": str(duration),
        "billsec": str(duration - 5) if answered else "0",
        "disposition": disposition,
        "amaflags": "DOCUMENTATION",
        "uniqueid": uniqueid,
        "userfield": "",
    }


def write_csv(path: Path, rows: list[dict[str, str]], extra_lines: str = "") -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in rows:
            writer.writerow(row.values())
        handle.write(extra_lines)
    return path


SQLITE_COLUMNS = [
    "calldate",
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "linkedid",
]


def write_sqlite(
    path: Path, rows: list[dict[str, str]], columns: list[str] = SQLITE_COLUMNS
) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE cdr ({', '.join(f'{c} TEXT' for c in columns)})")
        for row in rows:
            values = {**row, "calldate": row["start"], "linkedid": row["uniqueid"]}
            conn.execute(
                f"INSERT INTO cdr VALUES ({', '.join('?' * len(columns))})",
                [values.get(c, "") for c in columns],
            )
    conn.close()
    return path


def config(
    csv_path: Path | None = None,
    sqlite_path: Path | None = None,
    lookback_hours: float = 24.0,
    timezone: str = "UTC",
) -> CdrConfig:
    return CdrConfig(
        csv_path=csv_path,
        sqlite_path=sqlite_path,
        lookback_hours=lookback_hours,
        timezone=timezone,
        forwarded_contexts=("callcatch-forwarded",),
    )


def read(tmp_path: Path, rows: list[dict[str, str]], extra: str = "") -> dict[str, CallRecord]:
    path = write_csv(tmp_path / "Master.csv", rows, extra)
    backfill = Backfill(config(csv_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    return {call.linkedid: call for call in backfill.read()}


@pytest.mark.parametrize(
    ("disposition", "outcome"),
    [
        ("NO ANSWER", Outcome.NO_ANSWER),
        ("BUSY", Outcome.BUSY),
        ("FAILED", Outcome.UNAVAILABLE),
        ("CONGESTION", Outcome.UNAVAILABLE),
    ],
)
def test_unanswered_dispositions(tmp_path: Path, disposition: str, outcome: Outcome) -> None:
    call = read(tmp_path, [cdr("1760000000.1", disposition=disposition)])["1760000000.1"]
    assert call.outcome is outcome
    assert call.signal == "cdr"
    assert call.detected_by is Detection.CDR_BACKFILL


def test_record_fields_come_from_the_first_row(tmp_path: Path) -> None:
    row = cdr("1760000000.1", ago=timedelta(minutes=30), duration=25)
    call = read(tmp_path, [row])["1760000000.1"]
    assert call.caller == "2125550123"
    assert call.caller_name == "Jane Roe"
    assert call.did == "5551000"
    assert call.line == "PJSIP/carrier"
    assert call.forwarded_from is None
    assert call.started_at == NOW - timedelta(minutes=30)
    assert call.ended_at == NOW - timedelta(minutes=30) + timedelta(seconds=25)


def test_answered_by_a_phone(tmp_path: Path) -> None:
    call = read(tmp_path, [cdr("1760000000.1", disposition="ANSWERED")])["1760000000.1"]
    assert call.outcome is Outcome.ANSWERED
    assert call.signal == "cdr"


def test_answered_by_a_local_channel_counts_as_answered(tmp_path: Path) -> None:
    row = cdr("1760000000.1", disposition="ANSWERED", dstchannel="Local/600@grp-00000001;1")
    call = read(tmp_path, [row])["1760000000.1"]
    assert call.outcome is Outcome.ANSWERED
    assert call.signal == "cdr-local"


def test_answered_by_the_dialplan_only_is_missed(tmp_path: Path) -> None:
    row = cdr("1760000000.1", disposition="ANSWERED", dstchannel="", lastapp="Playback")
    assert read(tmp_path, [row])["1760000000.1"].outcome is Outcome.CALLER_HUNG_UP


def test_no_answer_then_voicemail(tmp_path: Path) -> None:
    rows = [
        cdr("1760000000.1", disposition="NO ANSWER"),
        cdr(
            "1760000000.1",
            dstchannel="",
            lastapp="VoiceMail",
            lastdata="100@default,u",
            disposition="ANSWERED",
            ago=timedelta(minutes=29),
        ),
    ]
    assert read(tmp_path, rows)["1760000000.1"].outcome is Outcome.VOICEMAIL


def test_ring_all_rows_of_one_call_make_one_record(tmp_path: Path) -> None:
    rows = [
        cdr("1760000000.1", dstchannel=PHONE),
        cdr("1760000000.1", dstchannel="PJSIP/phone2-00000003"),
    ]
    calls = read(tmp_path, rows)
    assert list(calls) == ["1760000000.1"]
    assert calls["1760000000.1"].outcome is Outcome.NO_ANSWER


@pytest.mark.parametrize("lastapp", ["Stasis", "VoiceMail", "Hangup"])
def test_forwarded_context_is_always_missed(tmp_path: Path, lastapp: str) -> None:
    row = cdr(
        "1760000000.1",
        dcontext="callcatch-forwarded",
        dstchannel="",
        lastapp=lastapp,
        disposition="ANSWERED",
    )
    call = read(tmp_path, [row])["1760000000.1"]
    assert call.outcome is Outcome.NO_ANSWER
    assert call.signal == "cdr-forwarded"


def test_analog_line(tmp_path: Path) -> None:
    row = cdr("1760000000.1", channel="DAHDI/1-1", dst="s", dcontext="callcatch-analog")
    call = read(tmp_path, [row])["1760000000.1"]
    assert call.line == "DAHDI/1"
    assert call.did is None


def test_calls_not_started_on_a_line_are_ignored(tmp_path: Path) -> None:
    rows = [
        cdr("1760000000.1", channel=PHONE, dstchannel="PJSIP/carrier-00000002", src="101"),
        cdr("1760000000.3", channel=PHONE, dstchannel="PJSIP/phone2-00000004", src="101"),
        cdr("1760000000.5", channel="Local/600@grp-00000001;2"),
    ]
    assert read(tmp_path, rows) == {}


def test_rows_outside_the_lookback_window_are_ignored(tmp_path: Path) -> None:
    rows = [
        cdr("1760000000.1", ago=timedelta(hours=25)),
        cdr("1760000000.2", ago=timedelta(hours=23)),
    ]
    assert list(read(tmp_path, rows)) == ["1760000000.2"]


def test_rows_without_uniqueid_are_skipped(tmp_path: Path) -> None:
    rows = [cdr(""), cdr("not-a-uniqueid"), cdr("pbx1-1760000000.7")]
    assert list(read(tmp_path, rows)) == ["pbx1-1760000000.7"]


def test_rows_written_without_loguniqueid_are_skipped(tmp_path: Path) -> None:
    row = cdr("1760000000.1")
    line = ",".join(f'"{v}"' for v in list(row.values())[:16]) + "\n"
    assert read(tmp_path, [], extra=line) == {}


def test_numbers_unquoted_as_cdr_csv_writes_them(tmp_path: Path) -> None:
    start = (NOW - timedelta(minutes=5)).strftime(FORMAT)
    end = (NOW - timedelta(minutes=4)).strftime(FORMAT)
    line = (
        f'"","2125550123","5551000","callcatch-ring","""Jane"" <2125550123>",'
        f'"{TRUNK}","{PHONE}","Dial","PJSIP/phone1,25","{start}","","{end}",60,0,'
        f'"NO ANSWER","DOCUMENTATION","1760000000.1",""\n'
    )
    call = read(tmp_path, [], extra=line)["1760000000.1"]
    assert call.outcome is Outcome.NO_ANSWER
    assert call.caller_name == "Jane"


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    garbage = (
        "garbage\n"
        "\n"
        '"a","b"\n'
        "\x00\x01\x02,,,,,,,,,,,,,,,,,,,\n"
        + ",".join(['"x"'] * 9 + ['"yesterday"'] + ['"x"'] * 6 + ['"1760000000.9"', '""'])
        + "\n"
    )
    rows_after = write_csv(tmp_path / "after.csv", [cdr("1760000000.2")])
    path = write_csv(tmp_path / "Master.csv", [cdr("1760000000.1")], garbage)
    path.write_bytes(path.read_bytes() + b"\xff\xfe\n" + rows_after.read_bytes())
    backfill = Backfill(config(csv_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    assert sorted(c.linkedid for c in backfill.read()) == ["1760000000.1", "1760000000.2"]


def test_missing_sources_read_as_nothing(tmp_path: Path) -> None:
    cfg = config(csv_path=tmp_path / "absent.csv", sqlite_path=tmp_path / "absent.db")
    assert Backfill(cfg, LINES, recorder=None).read() == []  # type: ignore[arg-type]


def test_csv_times_in_the_configured_zone(tmp_path: Path) -> None:
    zone = ZoneInfo("America/New_York")
    local = (NOW - timedelta(hours=1)).astimezone(zone).replace(tzinfo=None)
    row = cdr("1760000000.1") | {"start": local.strftime(FORMAT), "end": ""}
    path = write_csv(tmp_path / "Master.csv", [row])
    since = NOW - timedelta(hours=2)
    (read_row,) = read_csv(path, since, zone)
    assert read_row.start == NOW - timedelta(hours=1)
    assert read_row.end == read_row.start


def test_sqlite_rows_grouped_by_linkedid(tmp_path: Path) -> None:
    rows = [
        cdr("1760000000.1", disposition="BUSY"),
        cdr("1760000000.3", disposition="ANSWERED"),
        cdr("1760000000.5", ago=timedelta(hours=30)),
        cdr("1760000000.6", channel=PHONE, dstchannel=TRUNK),
    ]
    path = write_sqlite(tmp_path / "master.db", rows)
    backfill = Backfill(config(sqlite_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    calls = {c.linkedid: c for c in backfill.read()}
    assert {k: c.outcome for k, c in calls.items()} == {
        "1760000000.1": Outcome.BUSY,
        "1760000000.3": Outcome.ANSWERED,
    }
    assert calls["1760000000.1"].ended_at - calls["1760000000.1"].started_at == timedelta(
        seconds=25
    )


def test_sqlite_rows_with_unreadable_dates_are_skipped(tmp_path: Path) -> None:
    rows = [cdr("1760000000.1"), cdr("1760000000.2") | {"start": "yesterday"}]
    path = write_sqlite(tmp_path / "master.db", rows)
    backfill = Backfill(config(sqlite_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    assert [c.linkedid for c in backfill.read()] == ["1760000000.1"]


def test_sqlite_without_a_cdr_table_reads_as_nothing(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    sqlite3.connect(path).close()
    backfill = Backfill(config(sqlite_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    assert backfill.read() == []


def test_sqlite_with_stock_asterisk_columns_does_not_raise(tmp_path: Path) -> None:
    columns = [
        "calldate",
        "clid",
        "dcontext",
        "channel",
        "dstchannel",
        "lastapp",
        "lastdata",
        "duration",
        "billsec",
        "disposition",
        "amaflags",
        "accountcode",
        "uniqueid",
        "userfield",
        "test",
    ]
    path = write_sqlite(tmp_path / "master.db", [cdr("1760000000.1")], columns)
    backfill = Backfill(config(sqlite_path=path), LINES, recorder=None)  # type: ignore[arg-type]
    assert [c.linkedid for c in backfill.read()] in ([], ["1760000000.1"])


def test_calls_from_groups_rows_of_both_sources(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "Master.csv", [cdr("1760000000.1"), cdr("1760000000.2")])
    rows = list(read_csv(path, NOW - timedelta(hours=1), ZoneInfo("UTC")))
    calls = calls_from(rows + rows, LINES, ["callcatch-forwarded"])
    assert sorted(c.linkedid for c in calls) == ["1760000000.1", "1760000000.2"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AsyncStore]:
    opened = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    yield opened
    opened.close()


async def test_run_once_records_each_call_once(tmp_path: Path, store: AsyncStore) -> None:
    rows = [
        cdr("1760000000.1", disposition="NO ANSWER"),
        cdr("1760000000.3", disposition="BUSY"),
        cdr("1760000000.5", disposition="ANSWERED"),
        cdr("1760000000.7", channel=PHONE, dstchannel=TRUNK),
    ]
    path = write_csv(tmp_path / "Master.csv", rows)
    backfill = Backfill(config(csv_path=path), LINES, Recorder(store))
    assert await backfill.run_once() == 3
    assert await backfill.run_once() == 0
    recorded = {r["linkedid"]: r for r in store.store.calls()}
    assert sorted(recorded) == ["1760000000.1", "1760000000.3", "1760000000.5"]
    assert recorded["1760000000.1"]["detected_by"] == "cdr-backfill"
    assert recorded["1760000000.1"]["caller_e164"] == "+12125550123"
    assert recorded["1760000000.5"]["missed"] == 0


async def test_run_once_skips_calls_the_ami_already_recorded(
    tmp_path: Path, store: AsyncStore
) -> None:
    path = write_csv(tmp_path / "Master.csv", [cdr("1760000000.1"), cdr("1760000000.3")])
    ami_call = calls_from(read_csv(path, NOW - timedelta(hours=1), ZoneInfo("UTC")), LINES, [])[0]
    await store.record_call(replace(ami_call, detected_by=Detection.AMI, signal="hook"))
    backfill = Backfill(config(csv_path=path), LINES, Recorder(store))
    assert await backfill.run_once() == 1
    rows = {r["linkedid"]: r["detected_by"] for r in store.store.calls()}
    assert rows == {"1760000000.1": "ami", "1760000000.3": "cdr-backfill"}
