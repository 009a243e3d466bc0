"""Watch callcatch catch missed calls on a real Asterisk 22, on this machine.

Run through ``scripts/try-it.sh`` (which installs what this needs). It starts the test
Asterisk with the shipped asterisk-conf/, runs ``callcatch run`` with the example
configuration, places real SIP calls with SIPp (a caller who gives up while the shop's
phone rings, then a call the owner's mobile forwards to the shop's forwarding DID) and
shows what callcatch recorded. Everything stays on 127.0.0.1.
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
from tests.pbx import Asterisk, Phone, call  # noqa: E402

CALLER = "+12125550123"
OWNER_MOBILE = "+12125550188"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show_decisions(daemon: Daemon) -> None:
    for line in daemon.log().splitlines():
        if "callcatch.recorder" in line:
            print("   log:", line.split("callcatch.recorder: ", 1)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "try-it")
    args = parser.parse_args()

    shutil.rmtree(args.data, ignore_errors=True)
    args.data.mkdir(parents=True)
    asterisk = Asterisk()
    say("starting Asterisk 22 with the shipped asterisk-conf/ (scripts/asterisk.sh)")
    asterisk.start(fresh=True)
    daemon = Daemon(args.data, write_config(args.data, level='"INFO"'))
    try:
        say("starting callcatch run")
        daemon.start()

        say(f"{CALLER} calls the shop (DID 5550101); the phone rings; they hang up after 3 s")
        with Phone(port=5081, mode="ring"):
            call("5550101", CALLER, hangup_after_ms=3000)
        daemon.wait_for_calls(1)

        say(f"{CALLER} rings the owner's mobile, which forwards it to DID 5550106")
        call("5550106", CALLER, hangup_after_ms=None, diversion=OWNER_MOBILE)
        daemon.wait_for_calls(2)
        time.sleep(0.2)
        show_decisions(daemon)

        say("callcatch calls")
        subprocess.run(
            [sys.executable, "-m", "callcatch", "calls", "--config", str(daemon.config)],
            check=True,
        )
        print(f"\nThe store is {args.data / 'callcatch.db'}; the daemon's log {daemon.log_path}")
    finally:
        if daemon.process is not None:
            daemon.stop()
        asterisk.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
