"""The modem simulator as its own process, driven over its loopback control socket: where the
daemon under test expects a USB modem, ``link`` points at the simulator's pty."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gsmmodem.pdu import decodeSmsPdu

from tests.daemon import REPO

SIM_PIN = "1234"


class ModemProcess:
    def __init__(self, directory: Path, cmgs_delay: float = 0.05) -> None:
        self.link = directory / "ttyGSM0"
        self.log_path = directory / "modem-sim.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.modem_sim",
                "--link",
                str(self.link),
                "--pin",
                SIM_PIN,
                "--cmgs-delay",
                str(cmgs_delay),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        log.close()
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("control "):
            self.stop()
            raise AssertionError(f"the modem simulator did not start: {line!r}\n{self.log()}")
        host, port = line.split()[1].rsplit(":", 1)
        self.address = (host, int(port))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def command(self, line: str, timeout: float = 10.0) -> str:
        with socket.create_connection(self.address, timeout=timeout) as conn:
            conn.sendall(line.encode() + b"\n")
            answer = conn.makefile("rb").readline().decode().strip()
        if not answer.startswith("OK"):
            raise AssertionError(f"modem simulator: {line!r} -> {answer!r}")
        return answer[2:].strip()

    def sent(self) -> list[dict[str, Any]]:
        """Every PDU the modem accepted, decoded: number, text, and the raw fields."""
        result = []
        for item in json.loads(self.command("sent")):
            decoded = decodeSmsPdu(item["pdu"])
            result.append({**item, "number": decoded["number"], "text": decoded["text"]})
        return result

    def sent_to(self, number: str) -> list[dict[str, Any]]:
        return [s for s in self.sent() if s["number"] == number]

    def wait_sent(
        self, count: int, number: str | None = None, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = self.sent_to(number) if number else self.sent()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"expected {count} text(s) to {number or 'anyone'}, got {found}")

    def deliver(self, pdu_hex: str) -> None:
        self.command(f"deliver {pdu_hex}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("quit", timeout=2)
                self.process.wait(5)
            except (OSError, AssertionError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
