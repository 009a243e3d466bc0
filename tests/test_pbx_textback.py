"""End to end: a real SIP call on the real Asterisk, the daemon, and the modem simulator
behind a pty where the USB modem would be. Every assertion is on what reached the modem
(AT+CMGS PDUs, decoded) and on the store."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from callcatch.sms import pdu
from tests.daemon import Daemon
from tests.modem_process import SIM_PIN, ModemProcess
from tests.pbx import Asterisk, Phone, call

pytestmark = pytest.mark.pbx

_numbers = itertools.count(3000)
ALL_DAY = '"00:00-24:00"'
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def new_caller() -> str:
    return f"+1212555{next(_numbers):04d}"


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[ModemProcess]:
    sim = ModemProcess(tmp_path)
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def textback_daemon(
    daemon_factory: Callable[..., Daemon], modem: ModemProcess
) -> Callable[..., Daemon]:
    """A daemon wired to the simulated modem, open all day unless told otherwise."""

    def make(start: bool = True, **changes: str) -> Daemon:
        settings = {f"hours__{day}": ALL_DAY for day in DAYS}
        settings.update(
            modem__port=f'"{modem.link}"',
            modem__pin=f'"{SIM_PIN}"',
            modem__pace_seconds="0",
            modem__command_timeout="2",
            modem__send_timeout="5",
            textback__retry_seconds="0.5",
            # Other tests' calls sit in the shared CDR: keep them out of this daemon.
            cdr__lookback_hours="0",
        )
        settings.update(changes)
        daemon = daemon_factory(**settings)
        if start:
            daemon.start(ready=("AMI connected", "ARI connected", "modem sim1: ready"))
        return daemon

    return make


def test_the_daily_digest_reaches_the_owner_once_across_a_restart(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    owner = "+12125550188"
    daemon = textback_daemon(owner__numbers=f'["{owner}"]', owner__daily_digest='"00:00"')
    (digest,) = modem.wait_sent(1, owner)
    assert digest["text"].startswith("callcatch, ")
    assert "missed call" in digest["text"] and "Tomorrow: " in digest["text"]
    assert daemon.stop() == 0
    daemon.start(ready=("AMI connected", "modem sim1: ready", "was queued before"))
    assert modem.sent_to(owner) == [digest]


def missed_call(caller: str, hangup_after_ms: int = 1000) -> None:
    with Phone(port=5081, mode="ring"):
        result = call("5550101", caller, hangup_after_ms=hangup_after_ms)
    assert result.returncode == 0, result


def outbox_row(daemon: Daemon, caller: str) -> dict[str, object]:
    rows = daemon.outbox(caller)
    assert len(rows) == 1, rows
    return rows[0]


def test_missed_call_is_texted_back_with_the_open_hours_template(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    caller = new_caller()
    missed_call(caller)
    (text,) = modem.wait_sent(1, caller)
    assert text["text"].startswith("Sorry we missed your call at Example Plumbing!")
    assert text["text"].endswith("Reply STOP to opt out.")
    daemon.wait_for_outbox(caller, "sent")
    (row,) = daemon.wait_for_calls(1, lambda r: r["caller_e164"] == caller)
    assert row["textback"] == "queued" and row["textback_state"] == "sent"


def test_closed_day_gets_the_closed_template(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    today = datetime.now(ZoneInfo("America/New_York")).date().isoformat()
    textback_daemon(hours__holidays=f'["{today}"]')
    caller = new_caller()
    missed_call(caller)
    (text,) = modem.wait_sent(1, caller)
    assert "closed today" in text["text"]


def test_answered_call_sends_nothing(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    caller = new_caller()
    with Phone(port=5081, mode="answer", answer_after_ms=300):
        call("5550101", caller, hangup_after_ms=None, hold_ms=300)
    daemon.wait_for_calls(1, lambda r: r["caller_e164"] == caller and r["missed"] == 0)
    time.sleep(1.5)
    assert modem.sent_to(caller) == []


def test_repeat_caller_within_the_window_gets_one_text(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    caller = new_caller()
    missed_call(caller)
    missed_call(caller)
    # Each call's text-back decision is committed just after the call's row: wait for both.
    rows = daemon.wait_for_calls(
        2, lambda r: r["caller_e164"] == caller and r["textback"] is not None
    )
    time.sleep(1.0)
    assert len(modem.sent_to(caller)) == 1
    assert sorted(str(r["textback"]) for r in rows) == ["queued", "skipped"]


def test_stop_midway_stops_everything_for_that_number(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon(textback__delay_seconds="4")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "queued")
    modem.deliver(pdu.encode_deliver(caller, "Stop", sent_at=datetime.now().astimezone())[0])
    (confirmation,) = modem.wait_sent(1, caller)
    assert "unsubscribed" in confirmation["text"]
    time.sleep(4.5)
    missed_call(caller)
    daemon.wait_for_calls(2, lambda r: r["caller_e164"] == caller)
    time.sleep(1.0)
    assert len(modem.sent_to(caller)) == 1


def test_withheld_caller_is_not_texted_and_says_why(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    with Phone(port=5081, mode="ring"):
        call("5550101", anonymous=True, hangup_after_ms=800)
    (row,) = daemon.wait_for_calls(1, lambda r: r["caller_status"] != "callable")
    deadline = time.monotonic() + 5
    while row["textback"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        (row,) = daemon.wait_for_calls(1, lambda r: r["caller_status"] != "callable")
    assert row["textback"] == "skipped"
    assert "anonymous" in str(row["textback_reason"])
    assert modem.sent() == []


@pytest.mark.parametrize("code", [500, 38, 331])
def test_temporary_network_errors_are_retried_once_sent_never_twice(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess, code: int
) -> None:
    daemon = textback_daemon()
    modem.command(f"fail_cmgs {code} 1")
    caller = new_caller()
    missed_call(caller)
    row = daemon.wait_for_outbox(caller, "sent", timeout=20)
    assert row["attempts"] == 2
    time.sleep(1.0)
    assert len(modem.sent_to(caller)) == 1


def test_permanent_error_fails_with_the_reason(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    modem.command("fail_cmgs 304 1")
    caller = new_caller()
    missed_call(caller)
    row = daemon.wait_for_outbox(caller, "failed")
    assert "304" in str(row["reason"])
    assert modem.sent_to(caller) == []


def test_unplugged_modem_keeps_texts_waiting_until_it_is_back(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    modem.command("disappear")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "queued")
    time.sleep(1.0)
    assert daemon.outbox(caller)[0]["state"] == "queued"
    modem.command("reappear")
    daemon.wait_for_outbox(caller, "sent", timeout=30)
    assert len(modem.sent_to(caller)) == 1


def test_modem_unplugged_during_a_send_never_sends_twice(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    modem.command("cmgs_delay 3")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "sending")
    time.sleep(0.5)
    modem.command("disappear")
    time.sleep(1.0)
    modem.command("cmgs_delay 0.05")
    modem.command("reappear")
    row = daemon.wait_for_outbox(caller, ("sent", "failed"), timeout=30)
    time.sleep(2.0)
    assert len(modem.sent_to(caller)) <= 1
    if row["state"] == "failed":
        assert row["reason"]


def test_a_command_never_answered_resets_the_modem_and_the_text_goes(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    modem.command("hang")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "sent", timeout=30)
    assert len(modem.sent_to(caller)) == 1


def test_sigkill_between_commit_and_send_then_restart_sends_once(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon(textback__delay_seconds="3")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "queued")
    daemon.stop(signal.SIGKILL)
    daemon.start(ready=("AMI connected", "modem sim1: ready"))
    daemon.wait_for_outbox(caller, "sent", timeout=20)
    time.sleep(1.0)
    assert len(modem.sent_to(caller)) == 1


def test_sigkill_during_a_send_then_restart_never_sends_twice(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    modem.command("cmgs_delay 3")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "sending")
    time.sleep(1.0)  # the PDU is with the modem, whose +CMGS answer takes 3 s
    daemon.stop(signal.SIGKILL)
    modem.command("cmgs_delay 0.05")
    daemon.start(ready=("AMI connected", "modem sim1: ready"))
    row = daemon.wait_for_outbox(caller, "failed", timeout=10)
    assert "interrupted" in str(row["reason"])
    time.sleep(1.0)
    assert len(modem.sent_to(caller)) == 1


def test_asterisk_restart_mid_burst_texts_every_missed_caller_once(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess, asterisk: Asterisk
) -> None:
    daemon = textback_daemon()
    callers = [new_caller() for _ in range(6)]
    for index, caller in enumerate(callers):
        if index == 3:
            asterisk.restart()
            daemon.wait_for_log("AMI connected", count=2, timeout=40)
        missed_call(caller, hangup_after_ms=600)
    for caller in callers:
        modem.wait_sent(1, caller)
    time.sleep(1.0)
    assert all(len(modem.sent_to(c)) == 1 for c in callers)


def test_caller_answered_on_a_second_call_within_the_delay_gets_no_text(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon(textback__delay_seconds="4")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "queued")
    with Phone(port=5081, mode="answer", answer_after_ms=300):
        call("5550101", caller, hangup_after_ms=None, hold_ms=300)
    row = daemon.wait_for_outbox(caller, "failed", timeout=15)
    assert "called again and were answered" in str(row["reason"])
    assert modem.sent_to(caller) == []


def test_shop_calling_back_within_the_delay_cancels_the_text(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon(textback__delay_seconds="4")
    caller = new_caller()
    missed_call(caller)
    daemon.wait_for_outbox(caller, "queued")
    with Phone(host="127.0.0.2", port=5090, mode="answer", answer_after_ms=300):
        result = call(caller, "101", hangup_after_ms=None, hold_ms=300, source_ip="127.0.0.3")
    assert result.final_status == 200, result
    row = daemon.wait_for_outbox(caller, "failed", timeout=15)
    assert "called them back" in str(row["reason"])
    assert modem.sent_to(caller) == []


def test_send_test_goes_through_the_running_daemons_modem(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    daemon = textback_daemon()
    number = new_caller()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "callcatch",
            "send-test",
            number,
            "--config",
            str(daemon.config),
            "--text",
            "Modem check",
            "--wait",
            "20",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sent" in out.stdout
    (text,) = modem.wait_sent(1, number)
    assert text["text"] == "Modem check"


def test_two_modems_drain_one_outbox_each_text_sent_once(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess, tmp_path: Path
) -> None:
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = ModemProcess(second_dir)
    try:
        daemon = textback_daemon(start=False, modem__pace_seconds="1.0")
        with daemon.config.open("a") as config:
            config.write(
                f'\n[[modem]]\nname = "sim2"\nport = "{second.link}"\npin = "{SIM_PIN}"\n'
                "pace_seconds = 1.0\ncommand_timeout = 2\n"
            )
        daemon.start(ready=("AMI connected", "modem sim1: ready", "modem sim2: ready"))
        callers = [new_caller() for _ in range(6)]
        with Phone(port=5081, mode="ring", calls=len(callers)):
            for caller in callers:
                call("5550101", caller, hangup_after_ms=400)
        for caller in callers:
            daemon.wait_for_outbox(caller, "sent", timeout=30)
        time.sleep(1.0)
        first_numbers = [s["number"] for s in modem.sent()]
        second_numbers = [s["number"] for s in second.sent()]
        assert sorted(first_numbers + second_numbers) == sorted(callers)
        assert first_numbers and second_numbers
    finally:
        second.stop()


def test_owner_summary_and_help_reach_the_modem(
    textback_daemon: Callable[..., Daemon], modem: ModemProcess
) -> None:
    owner = "+12125550188"
    textback_daemon(owner__numbers=f'["{owner}"]', owner__batch_seconds="0")
    caller = new_caller()
    missed_call(caller)
    modem.wait_sent(1, caller)
    (summary,) = modem.wait_sent(1, owner)
    assert summary["text"].startswith("1 missed call:")
    assert f"{caller} (caller-hung-up), texted back" in summary["text"]
    modem.deliver(pdu.encode_deliver(caller, "help", sent_at=datetime.now().astimezone())[0])
    (_, help_reply) = modem.wait_sent(2, caller)
    assert help_reply["text"].startswith("Example Plumbing: call us on (212) 555-0100")
