"""The callcatch daemon as a real process, for the end-to-end tests, the benchmarks and
scripts/try-it.sh: its configuration is the shipped example with the test box's values."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from callcatch.store import Store
from tests.pbx import CDR_CSV

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "callcatch.example.toml"
AMI_SECRET = os.environ.get("CALLCATCH_AMI_SECRET", "test-ami-secret")
ARI_PASSWORD = os.environ.get("CALLCATCH_ARI_PASSWORD", "test-ari-password")


def write_config(directory: Path, **changes: str) -> Path:
    """The shipped example configuration with the test box's values, as an installer
    would edit it: each change replaces the value of one ``key = value`` line."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    values = {
        "path": f'"{directory / "callcatch.db"}"',
        "secret": f'"{AMI_SECRET}"',
        "password": f'"{ARI_PASSWORD}"',
        "csv_path": f'"{CDR_CSV}"',
        "ping_interval": "1.0",
        "pong_timeout": "1.0",
        "level": '"DEBUG"',
    }
    values.update(changes)
    for key, value in values.items():
        text, count = re.subn(rf"(?m)^{key} = [^#\n]*?(\s*#.*)?$", rf"{key} = {value}\1", text)
        assert count == 1, f"{key} is not set exactly once in {EXAMPLE_CONFIG}"
    path = directory / "callcatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Daemon:
    """``callcatch run`` as a real process, its log captured to a file."""

    def __init__(self, directory: Path, config: Path) -> None:
        self.directory = directory
        self.config = config
        self.log_path = directory / "callcatch.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    def start(self, ready: tuple[str, ...] = ("AMI connected", "ARI connected")) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callcatch", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        log.close()
        for line in ready:
            self.wait_for_log(line)

    def log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")[self._log_offset :]

    def wait_for_log(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} (x{count}) in the daemon log:\n{self.log()[-4000:]}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"the daemon ignored signal {signum}:\n{self.log()[-4000:]}"
            ) from None
        self.process = None
        return code

    def calls(self) -> list[dict[str, Any]]:
        store = Store(self.directory / "callcatch.db", "US")
        try:
            return store.calls()
        finally:
            store.close()

    def wait_for_calls(
        self,
        count: int,
        where: Callable[[dict[str, Any]], bool] = lambda c: True,
        timeout: float = 15,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            found = [c for c in self.calls() if where(c)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(
            f"expected {count} call(s), found {found!r}\nlog:\n{self.log()[-4000:]}"
        )
