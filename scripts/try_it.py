"""Watch callcatch catch missed calls on a real Asterisk 22 and text the callers back.

Run through ``scripts/try-it.sh`` (which installs what this needs). It starts the test
Asterisk with the shipped asterisk-conf/, a simulated GSM modem where the USB modem would
be, and ``callcatch run`` with the example configuration; then places real SIP calls with
SIPp (a caller who gives up while the shop's phone rings, then a call the owner's mobile
forwards to the shop's forwarding DID), shows the texts that reached the modem, and what
callcatch recorded. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon import Daemon, write_config  # noqa: E402
from tests.modem_process import SIM_PIN, ModemProcess  # noqa: E402
from tests.pbx import Asterisk, Phone, call  # noqa: E402

CALLER = "+12125550123"
SECOND_CALLER = "+12125550145"
OWNER_MOBILE = "+12125550188"
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_decisions(daemon: Daemon) -> None:
    for line in daemon.log().splitlines():
        for source in ("callcatch.recorder: ", "callcatch.textback: ", "callcatch.sms.outbox: "):
            if source in line:
                print("   log:", line.split(source, 1)[-1])


def show_text(modem: ModemProcess, number: str) -> None:
    (text,) = modem.wait_sent(1, number)
    print(f"   the modem sends to {number}: {text['text']!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "try-it")
    args = parser.parse_args()

    shutil.rmtree(args.data, ignore_errors=True)
    args.data.mkdir(parents=True)
    asterisk = Asterisk()
    say("starting Asterisk 22 with the shipped asterisk-conf/ (scripts/asterisk.sh)")
    asterisk.start(fresh=True)
    say("starting a simulated GSM modem at data/try-it/ttyGSM0")
    modem = ModemProcess(args.data)
    open_all_week = {f"hours__{day}": '"00:00-24:00"' for day in DAYS}
    config = write_config(
        args.data,
        log__level='"INFO"',
        modem__port=f'"{modem.link}"',
        modem__pin=f'"{SIM_PIN}"',
        cdr__lookback_hours="0",
        **open_all_week,
    )
    daemon = Daemon(args.data, config)
    try:
        say("starting callcatch run")
        daemon.start(ready=("AMI connected", "ARI connected", "modem sim1: ready"))

        say(f"{CALLER} calls the shop (DID 5550101); the phone rings; they hang up after 3 s")
        with Phone(port=5081, mode="ring"):
            call("5550101", CALLER, hangup_after_ms=3000)
        show_text(modem, CALLER)

        say(f"{SECOND_CALLER} rings the owner's mobile, which forwards it to DID 5550106")
        call("5550106", SECOND_CALLER, hangup_after_ms=None, diversion=OWNER_MOBILE)
        show_text(modem, SECOND_CALLER)
        time.sleep(0.3)
        show_decisions(daemon)

        for command in ("calls", "outbox"):
            say(f"callcatch {command}")
            subprocess.run(
                [sys.executable, "-m", "callcatch", command, "--config", str(daemon.config)],
                check=True,
            )
        print(f"\nThe store is {args.data / 'callcatch.db'}; the daemon's log {daemon.log_path}")
    finally:
        if daemon.process is not None:
            daemon.stop()
        modem.stop()
        asterisk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
