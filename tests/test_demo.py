"""``callcatch demo`` as a user runs it: a real process, the embedded demo profile, the real
model in its worker process, and a script of the caller's texts; --json is read back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_the_demo_books_a_job_and_tells_the_owner(tmp_path: Path) -> None:
    assert MODEL.is_file(), f"{MODEL} is missing (scripts/install-models.sh)"
    script = tmp_path / "caller.txt"
    script.write_text(
        "my kitchen sink is blocked\n12 Elm St Brooklyn 11201\ntomorrow morning\nDana\n2\n",
        encoding="utf-8",
    )
    run = subprocess.run(
        [sys.executable, "-m", "callcatch", "demo", "--script", str(script), "--json",
         "--data", str(tmp_path / "data"), "--model", str(MODEL)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    shop = [line["text"] for line in result["transcript"] if line["from"] == "shop"]
    assert shop[0].startswith("Sorry we missed your call at Example Plumbing!")
    assert shop[-1].startswith("Booked: blocked drain or toilet, ")
    booking = result["booking"]
    assert booking["state"] == "booked" and booking["name"] == "Dana"
    assert booking["service"] == "Blocked drain or toilet"
    assert result["slots"]["address"] == "12 Elm St"
    (owner,) = result["owner_texts"]
    assert owner.startswith("Booked: +12125550147, Dana, Blocked drain or toilet")
    turns = result["turns"]
    assert len(turns) == 5 and all(t["assistant"] for t in turns)
    assert any(t["model_used"] for t in turns), "the local model never answered"
