#!/usr/bin/env python3
"""Run the conversation evaluation and print its report (a measurement: always exits 0).

``.venv/bin/python scripts/eval_conversations.py [--model GGUF] [--data DIR]
[--quiet] [DIALOGUES ...]`` plays every dialogue (default: tests/conversations) through
the whole product with the real local model; see :mod:`callcatch.evaluation`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callcatch.evaluation import Outcome, evaluate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "tests" / "conversations")])
    parser.add_argument(
        "--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    )
    parser.add_argument("--data", help="folder for the per-dialogue stores (default: a temp)")
    parser.add_argument("--quiet", action="store_true", help="no transcripts of failures")
    args = parser.parse_args()

    def progress(outcome: Outcome) -> None:
        mark = "ok  " if outcome.passed else "FAIL"
        print(f"{mark} {outcome.dialogue.name}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="callcatch-eval-") as temp:
        data = Path(args.data) if args.data else Path(temp)
        report = evaluate(args.paths, Path(args.model), data, progress)
    report.command = " ".join(["scripts/eval_conversations.py", *sys.argv[1:]])
    print(report.render(verbose=not args.quiet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
