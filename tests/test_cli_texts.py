"""callcatch outbox and callcatch send-test, on a real store."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callcatch.cli import main
from callcatch.store import Store
from callcatch.store import texts as q
from tests.daemon import write_config

NUMBER = "+12125550123"


def fill(config: Path) -> None:
    store = Store(config.parent / "callcatch.db", "US")
    now = datetime.now(UTC)
    for index, body in enumerate(["first text", "second\ntext"]):
        q.queue(
            store,
            kind=q.TEXTBACK,
            number=NUMBER,
            body=body,
            now=now,
            expires_at=now + timedelta(minutes=30),
            linkedid=f"cli.{index}",
        )
    claimed = q.claim(store, "sim1", now)
    assert claimed is not None
    q.mark_failed(store, claimed.id, "permanent: 304 invalid PDU mode parameter", now)
    store.close()


def test_outbox_lists_texts_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    fill(config)
    assert main(["outbox", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["id", "created", "kind", "to", "state"]
    assert "second / text" in lines[1] and "queued" in lines[1]
    assert "failed" in lines[2] and "304 invalid PDU" in lines[2]


def test_outbox_json_and_state_filter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    fill(config)
    assert main(["outbox", "--config", str(config), "--json", "--state", "failed"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["body"] for r in rows] == ["first text"]


def test_send_test_without_a_running_daemon_says_so(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "callcatch",
            "send-test",
            NUMBER,
            "--config",
            str(config),
            "--wait",
            "0.5",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "queued for +12125550123" in out.stdout
    assert "is `callcatch run` running" in out.stdout


def test_send_test_refuses_a_number_that_cannot_get_a_text(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "callcatch", "send-test", "12", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    assert "not a number a text can go to" in out.stderr
    assert "Traceback" not in out.stderr
