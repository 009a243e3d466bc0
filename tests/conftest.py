"""Fixtures for the end-to-end suite: the real Asterisk 22 and the callcatch daemon."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, write_config
from tests.pbx import Asterisk

__all__ = ["Daemon", "write_config"]


@pytest.fixture(scope="session")
def asterisk() -> Iterator[Asterisk]:
    pbx = Asterisk()
    pbx.start(fresh=True)
    try:
        yield pbx
    finally:
        pbx.stop()


@pytest.fixture
def daemon_factory(asterisk: Asterisk, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def make(**changes: str) -> Daemon:
        daemon = Daemon(tmp_path, write_config(tmp_path, **changes))
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.process is not None:
            assert daemon.stop() == 0, daemon.log()[-4000:]


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    running = daemon_factory()
    running.start()
    return running
