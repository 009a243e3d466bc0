from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcatch import cli
from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.cli import UsageError, parse_since
from callcatch.store import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "callcatch.example.toml"
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - timedelta(minutes=30)
EARLIER = NOW - timedelta(hours=3)
DAY = (NOW - timedelta(days=2)).astimezone(NEW_YORK).date()
DAY_MORNING = datetime.combine(DAY, time(6, 0), NEW_YORK)
EVE_BEFORE = datetime.combine(DAY, time(0, 0), NEW_YORK) - timedelta(hours=1)


def record(linkedid: str, started: datetime, outcome: Outcome, caller: str) -> CallRecord:
    return CallRecord(
        linkedid=linkedid,
        caller=caller,
        caller_name="",
        did="5551000",
        forwarded_from="+12125550199" if outcome is Outcome.NO_ANSWER else None,
        line="PJSIP/carrier",
        started_at=started,
        ended_at=started + timedelta(seconds=20),
        outcome=outcome,
        detected_by=Detection.AMI,
        signal="inferred",
    )


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CALLCATCH_"):
            monkeypatch.delenv(name)
    text = EXAMPLE.read_text(encoding="utf-8")
    text, count = re.subn(
        r'(?m)^path = ".*?"', f"path = {json.dumps(str(tmp_path / 'callcatch.db'))}", text
    )
    assert count == 1
    path = tmp_path / "callcatch.toml"
    path.write_text(text, encoding="utf-8")
    store = Store(tmp_path / "callcatch.db", "US")
    try:
        store.record_call(record("recent", RECENT, Outcome.NO_ANSWER, "212-555-0123"))
        store.record_call(record("earlier", EARLIER, Outcome.ANSWERED, "2015550123"))
        store.record_call(record("day", DAY_MORNING, Outcome.BUSY, "anonymous"))
        store.record_call(record("eve", EVE_BEFORE, Outcome.CALLER_HUNG_UP, "<b>"))
    finally:
        store.close()
    return path


def run(config: Path, *args: str) -> int:
    return cli.main(["calls", "--config", str(config), *args])


def test_table_lists_calls_newest_first(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["started", "outcome", "caller"]
    assert [line.split()[-1] for line in lines[1:]] == ["recent", "earlier", "day", "eve"]
    recent = lines[1]
    assert RECENT.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M:%S") in recent
    assert "no-answer" in recent
    assert "+12125550123" in recent
    assert "+12125550199" in recent
    assert "(anonymous) anonymous" in lines[3]
    assert "(invalid) <b>" in lines[4]


def test_json_has_every_field(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["linkedid"] for row in rows] == ["recent", "earlier", "day", "eve"]
    first = rows[0]
    assert first["missed"] is True
    assert rows[1]["missed"] is False
    assert first["caller_e164"] == "+12125550123"
    assert first["caller_raw"] == "212-555-0123"
    assert first["caller_status"] == "callable"
    assert first["outcome"] == "no-answer"
    assert first["forwarded_from"] == "+12125550199"
    assert first["did"] == "5551000"
    assert first["line"] == "PJSIP/carrier"
    assert first["detected_by"] == "ami"
    assert datetime.fromisoformat(first["started_at"]) == RECENT
    assert {"ended_at", "recorded_at", "signal", "caller_reason"} <= first.keys()


def test_since_a_duration(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "--json", "--since", "1h") == 0
    assert [row["linkedid"] for row in json.loads(capsys.readouterr().out)] == ["recent"]


def test_since_a_date_is_midnight_in_the_shop_zone(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "--json", "--since", DAY.isoformat()) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["linkedid"] for row in rows] == ["recent", "earlier", "day"]


def test_since_an_iso_date_literal(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "--json", "--since", "2026-01-01") == 0
    rows = json.loads(capsys.readouterr().out)
    since = datetime(2026, 1, 1, 5, 0, tzinfo=UTC)
    assert all(datetime.fromisoformat(row["started_at"]) >= since for row in rows)


def test_limit(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "--json", "--limit", "2") == 0
    assert [row["linkedid"] for row in json.loads(capsys.readouterr().out)] == [
        "recent",
        "earlier",
    ]


@pytest.mark.parametrize("args", [["--since", "nonsense"], ["--since", "5y"], ["--limit", "0"]])
def test_bad_arguments_exit_2_with_one_line(
    config_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    assert run(config_path, *args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith(f"callcatch: {args[0]}: ")


def test_since_nonsense_as_a_process(config_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "callcatch", "calls", "--config", str(config_path), "--since", "x"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("CALLCATCH_")},
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "callcatch: --since: expected 2h, 30m, 7d or an ISO date, got 'x'"
    ]


def test_empty_store(
    tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "callcatch.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"callcatch.db{suffix}").unlink(missing_ok=True)
    assert run(config_path) == 0
    assert capsys.readouterr().out == "no calls recorded\n"
    assert run(config_path, "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_store_from_a_newer_callcatch_exits_1(
    tmp_path: Path, config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(tmp_path / "callcatch.db", "US")
    store.db.execute("PRAGMA user_version = 99")
    store.close()
    assert run(config_path) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "newer than this callcatch" in err


NOON = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1.5h", timedelta(minutes=90)),
        ("2H", timedelta(hours=2)),
        (" 2 h ", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("0h", timedelta(0)),
    ],
)
def test_parse_since_durations(text: str, ago: timedelta) -> None:
    assert parse_since(text, NEW_YORK, now=NOON) == NOON - ago


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2026-01-01", datetime(2026, 1, 1, 5, 0, tzinfo=UTC)),
        ("2026-07-01", datetime(2026, 7, 1, 4, 0, tzinfo=UTC)),
        ("2026-01-01T09:30", datetime(2026, 1, 1, 14, 30, tzinfo=UTC)),
        ("2026-01-01T09:30:00+00:00", datetime(2026, 1, 1, 9, 30, tzinfo=UTC)),
        ("2026-01-01T09:30:00Z", datetime(2026, 1, 1, 9, 30, tzinfo=UTC)),
    ],
)
def test_parse_since_iso_dates(text: str, moment: datetime) -> None:
    result = parse_since(text, NEW_YORK, now=NOON)
    assert result == moment
    assert result.tzinfo is UTC


@pytest.mark.parametrize("text", ["nonsense", "", "-1h", "1y", "h", "1e3h", "2026-13-01"])
def test_parse_since_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="--since"):
        parse_since(text, NEW_YORK, now=NOON)


@pytest.mark.parametrize("text", ["9999999d", "99999999999d"])
def test_parse_since_huge_durations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_since(text, NEW_YORK, now=NOON)


def _conversation_and_booking(config_path: Path) -> None:
    """A conversation with a booked visit, as the assistant leaves them in the store."""
    from callcatch import booking
    from callcatch.config import load
    from callcatch.store import conversations

    config = load(config_path)
    store = Store(config.store.path, "US")
    try:
        talk = conversations.open_for(store, "+12125550147", NOW)
        talk.slots = {"service": "Blocked drain or toilet", "name": "Dana", "area": "Brooklyn"}
        slot = booking.Availability(config).slots(NOW)[0]
        made = booking.book(
            store, "+12125550147", slot, "Blocked drain or toilet", "Dana", "12 Elm St",
            talk.id, NOW,
        )  # fmt: skip
        assert made is not None
        talk.state, talk.booking_id = conversations.BOOKED, made.id
        conversations.save(store, talk, NOW)
    finally:
        store.close()


def test_conversations_and_bookings_list_what_the_assistant_did(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _conversation_and_booking(config_path)
    assert cli.main(["conversations", "--config", str(config_path), "--json"]) == 0
    (talk,) = json.loads(capsys.readouterr().out)
    assert talk["number"] == "+12125550147" and talk["state"] == "booked"
    assert talk["slots"]["name"] == "Dana" and talk["owner_holds"] is False
    assert cli.main(["conversations", "--config", str(config_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["id", "number", "state", "owner"]
    assert "service=Blocked drain or toilet" in table[1]
    assert cli.main(["bookings", "--config", str(config_path), "--json"]) == 0
    (visit,) = json.loads(capsys.readouterr().out)
    assert (visit["name"], visit["address"], visit["state"]) == ("Dana", "12 Elm St", "booked")
    assert cli.main(["bookings", "--config", str(config_path), "--ics"]) == 0
    ics = capsys.readouterr().out
    assert ics.startswith("BEGIN:VCALENDAR") and ics.count("BEGIN:VEVENT") == 1
    assert "Blocked drain or toilet" in ics


def test_takeover_and_release_from_the_command_line(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _conversation_and_booking(config_path)
    assert cli.main(["takeover", "--config", str(config_path), "(212) 555-0147"]) == 0
    assert capsys.readouterr().out.strip() == "+12125550147: the owner answers"
    assert cli.main(["conversations", "--config", str(config_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["owner_holds"] is True
    assert cli.main(["release", "--config", str(config_path), "+12125550147"]) == 0
    assert capsys.readouterr().out.strip() == "+12125550147: the assistant answers"
    assert cli.main(["release", "--config", str(config_path), "+12125550999"]) == 1
    assert "no conversation with +12125550999" in capsys.readouterr().out
