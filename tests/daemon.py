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

from callcatch.store import Store, texts
from tests.pbx import CDR_CSV

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "callcatch.example.toml"
AMI_SECRET = os.environ.get("CALLCATCH_AMI_SECRET", "test-ami-secret")
ARI_PASSWORD = os.environ.get("CALLCATCH_ARI_PASSWORD", "test-ari-password")


def write_config(directory: Path, **changes: str) -> Path:
    """The shipped example configuration with the test box's values, as an installer
    would edit it. Each change names ``section__key`` (``ami__port``) and replaces the value
    of that one ``key = value`` line (a bare ``key`` must be unique in the file); the
    value ``"#"`` comments the line out."""
    values = {
        "store__path": f'"{directory / "callcatch.db"}"',
        "ami__secret": f'"{AMI_SECRET}"',
        "ari__password": f'"{ARI_PASSWORD}"',
        "cdr__csv_path": f'"{CDR_CSV}"',
        "ami__ping_interval": "1.0",
        "ami__pong_timeout": "1.0",
        "log__level": '"DEBUG"',
        "modem__port": f'"{directory / "no-modem"}"',
    }
    values.update(changes)
    lines = EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines()
    for name, value in values.items():
        section, _, key = name.rpartition("__")
        lines = _set(lines, section or None, key, value)
    path = directory / "callcatch.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _set(lines: list[str], section: str | None, key: str, value: str) -> list[str]:
    current, hits, result = "", 0, []
    for line in lines:
        header = re.match(r"^\[\[?([\w.]+)\]\]?", line)
        if header:
            current = header.group(1)
        match = re.match(rf"^#?\s*{key} = [^#\n]*?(\s*#.*)?$", line)
        if section in (None, current) and match:
            hits += 1
            line = f"# {key} =" if value == "#" else f"{key} = {value}{match.group(1) or ''}"
        result.append(line)
    assert hits == 1, f"[{section or '*'}] {key} is not set exactly once in {EXAMPLE_CONFIG}"
    return result


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

    def outbox(self, number: str) -> list[dict[str, Any]]:
        store = Store(self.directory / "callcatch.db", "US")
        try:
            return [r for r in texts.outbox(store, limit=10_000) if r["number"] == number]
        finally:
            store.close()

    def wait_for_outbox(
        self, number: str, state: str | tuple[str, ...], timeout: float = 15
    ) -> dict[str, Any]:
        """The newest text to ``number`` once it is in ``state`` (or one of them)."""
        states = (state,) if isinstance(state, str) else state
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.outbox(number)
            if rows and rows[0]["state"] in states:
                return rows[0]
            time.sleep(0.05)
        raise AssertionError(
            f"no text to {number} in {states}: {rows!r}\nlog:\n{self.log()[-4000:]}"
        )
