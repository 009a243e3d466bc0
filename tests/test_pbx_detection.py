"""End to end on the real Asterisk 22: SIPp plays the carrier and the phones, the shipped
asterisk-conf/ runs the dialplan, and the daemon's store must say what happened.

The test DIDs and phones are described in tests/asterisk/README.md.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.conftest import Daemon
from tests.pbx import CDR_SQLITE, Asterisk, Phone, call

pytestmark = pytest.mark.pbx

_numbers = itertools.count(1000)


def new_caller() -> str:
    """A valid, unused US number per call, so calls of one test never match another's."""
    return f"+1212555{next(_numbers):04d}"


def by(caller: str) -> Callable[[dict[str, object]], bool]:
    return lambda row: row["caller_e164"] == caller


def only_call(daemon: Daemon, caller: str) -> dict[str, object]:
    (row,) = daemon.wait_for_calls(1, by(caller))
    return row


def test_caller_hangs_up_while_the_phone_rings(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        result = call("5550101", caller, hangup_after_ms=1500)
    assert result.returncode == 0, result
    row = only_call(daemon, caller)
    assert row["outcome"] == "caller-hung-up"
    assert row["missed"] == 1
    assert row["detected_by"] == "ami"
    assert row["did"] == "5550101"
    assert row["line"] == "PJSIP/carrier"
    assert row["caller_status"] == "callable"


def test_phone_rings_out(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550102", caller, hangup_after_ms=None)
    row = only_call(daemon, caller)
    assert (row["outcome"], row["missed"]) == ("no-answer", 1)


def test_phone_busy(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="busy"):
        call("5550101", caller, hangup_after_ms=None)
    assert only_call(daemon, caller)["outcome"] == "busy"


def test_no_phone_registered(daemon: Daemon) -> None:
    caller = new_caller()
    call("5550103", caller, hangup_after_ms=None)
    assert only_call(daemon, caller)["outcome"] == "unavailable"


def test_answered_by_the_first_phone(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="answer", answer_after_ms=500):
        result = call("5550101", caller, hangup_after_ms=None, hold_ms=500)
    assert result.returncode == 0, result
    row = only_call(daemon, caller)
    assert (row["outcome"], row["missed"]) == ("answered", 0)


def test_ring_group_answered_by_the_second_phone(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"), Phone(port=5082, mode="answer", answer_after_ms=1000):
        call("5550104", caller, hangup_after_ms=None, hold_ms=500)
    row = only_call(daemon, caller)
    assert (row["outcome"], row["missed"]) == ("answered", 0)


def test_caller_reaches_voicemail(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550105", caller, hangup_after_ms=None, hold_ms=1000)
    row = only_call(daemon, caller)
    assert (row["outcome"], row["missed"]) == ("voicemail", 1)


def test_forwarded_call_records_the_forwarding_number(daemon: Daemon) -> None:
    caller, owner_mobile = new_caller(), new_caller()
    call("5550106", caller, hangup_after_ms=None, diversion=owner_mobile)
    row = only_call(daemon, caller)
    assert row["missed"] == 1
    assert row["detected_by"] == "ari"
    assert row["forwarded_from"] == owner_mobile
    assert row["did"] == "5550106"


def test_forwarded_call_without_the_stasis_app_falls_back_to_the_user_event(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(ari__enabled="false")
    daemon.start(ready=("AMI connected",))
    caller, owner_mobile = new_caller(), new_caller()
    call("5550106", caller, hangup_after_ms=None, diversion=owner_mobile)
    row = only_call(daemon, caller)
    assert (row["detected_by"], row["signal"]) == ("ami", "fallback")
    assert row["forwarded_from"] == owner_mobile
    assert row["missed"] == 1


def test_stasis_after_a_failed_dial(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550108", caller, hangup_after_ms=None)
    row = only_call(daemon, caller)
    assert (row["detected_by"], row["outcome"]) == ("ari", "no-answer")


def test_hangup_handler_hook_wins_over_inference(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550107", caller, hangup_after_ms=1500)
    row = only_call(daemon, caller)
    assert (row["signal"], row["outcome"]) == ("hook", "caller-hung-up")


def test_withheld_caller_is_recorded_as_not_callable(daemon: Daemon) -> None:
    with Phone(port=5081, mode="ring"):
        call("5550101", anonymous=True, hangup_after_ms=1000)
    rows = daemon.wait_for_calls(1, lambda r: r["caller_status"] in ("anonymous", "withheld"))
    assert rows[0]["caller_e164"] is None
    assert rows[0]["missed"] == 1


def test_same_caller_twice_within_a_minute_is_two_missed_calls(daemon: Daemon) -> None:
    caller = new_caller()
    with Phone(port=5081, mode="ring", calls=2):
        call("5550101", caller, hangup_after_ms=1000)
        call("5550101", caller, hangup_after_ms=1000)
    rows = daemon.wait_for_calls(2, by(caller))
    assert len(rows) == 2
    assert rows[0]["linkedid"] != rows[1]["linkedid"]
    assert all(r["outcome"] == "caller-hung-up" for r in rows)


def test_asterisk_restart_then_the_next_missed_call_is_caught(
    daemon: Daemon, asterisk: Asterisk
) -> None:
    asterisk.restart()
    daemon.wait_for_log("AMI connected", count=2, timeout=40)
    daemon.wait_for_log("ARI connected", count=2, timeout=40)
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550101", caller, hangup_after_ms=1000)
    assert only_call(daemon, caller)["outcome"] == "caller-hung-up"


def test_call_missed_while_stopped_is_backfilled_once(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory()
    caller = new_caller()
    with Phone(port=5081, mode="ring"):
        call("5550101", caller, hangup_after_ms=1000)
    daemon.start()
    row = only_call(daemon, caller)
    assert (row["detected_by"], row["missed"]) == ("cdr-backfill", 1)
    assert row["did"] == "5550101"
    assert daemon.stop() == 0
    daemon.start()
    daemon.wait_for_log("CDR backfill", count=2)
    assert len([r for r in daemon.calls() if by(caller)(r)]) == 1


def test_call_missed_while_stopped_is_backfilled_from_cdr_sqlite(
    daemon_factory: Callable[..., Daemon],
) -> None:
    daemon = daemon_factory(cdr__csv_path='""', cdr__sqlite_path=f'"{CDR_SQLITE}"')
    caller = new_caller()
    call("5550103", caller, hangup_after_ms=None)
    daemon.start()
    row = only_call(daemon, caller)
    assert (row["detected_by"], row["outcome"]) == ("cdr-backfill", "unavailable")
    assert row["linkedid"].startswith("callcatch-")
    assert daemon.stop() == 0
    daemon.start()
    daemon.wait_for_log("CDR backfill", count=2)
    assert len([r for r in daemon.calls() if by(caller)(r)]) == 1


def test_sigterm_drains_and_exits_cleanly(daemon: Daemon) -> None:
    assert daemon.stop(signal.SIGTERM) == 0
    assert "stopped" in daemon.log()


def test_check_config_accepts_the_test_configuration(daemon: Daemon) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "callcatch", "check-config", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "test-ami-secret" not in out.stdout
