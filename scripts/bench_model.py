#!/usr/bin/env python3
"""Measure the local model on this machine: load time, generation speed, extraction latency.

Numbers for models/README.md come from here, so that a shop can run the same thing on its
own box: ``.venv/bin/python scripts/bench_model.py [MODEL] [--threads N] [--requests N]``.
It drives the real worker through the real client (the path the daemon uses).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callcatch.config import ConversationConfig  # noqa: E402
from callcatch.conversation.model import ModelClient  # noqa: E402

MESSAGES = [
    "Hi, kitchen sink leaking badly, 12 Oak Street, Leeds. Tom",
    "Can someone service my boiler next Tuesday morning? Headingley. Sarah Jones",
    "toilet blocked, need someone tomorrow after 3pm, 4 Mill Lane",
    "No hot water since yesterday, 27 Station Rd, Otley, please call",
    "radiator in the bedroom is cold, any day next week is fine, I'm Priya",
]


def generation_speed(model: Path, threads: int) -> tuple[float, float, int]:
    """Load seconds, tokens/s and tokens for a plain 64-token completion (no grammar)."""
    import llama_cpp

    began = time.perf_counter()
    llm = llama_cpp.Llama(str(model), n_ctx=512, n_threads=threads, seed=1, verbose=False)
    load = time.perf_counter() - began
    llm("Once upon a time", max_tokens=8, temperature=0.0)  # warm the graph
    began = time.perf_counter()
    out = llm("The plumber arrived at", max_tokens=64, temperature=0.0)
    seconds = time.perf_counter() - began
    tokens = int(out["usage"]["completion_tokens"])
    return load, tokens / seconds, tokens


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def extraction(model: Path, threads: int, requests: int) -> None:
    config = ConversationConfig(
        enabled=True,
        model_path=model,
        context_size=1024,
        threads=threads,
        reply_timeout=60.0,
        stall_minutes=60.0,
    )
    cold = ModelClient(config, warmup=False)
    began = time.perf_counter()
    await cold.start()
    await cold.ready.wait()
    print(f"worker start to ready (process + load): {time.perf_counter() - began:.2f} s")
    for text in ("My radiator is cold, Ben, 3 Park Road", "My radiator is cold, Amy, 7 Elm Road"):
        await cold.extract(text, {})
        stats = cold.stats
        print(
            f"no warm-up: {stats.last_latency or 0.0:.3f} s, {stats.last_tokens} tokens out, "
            f"{stats.last_reused_tokens}/{stats.last_prompt_tokens} prompt tokens from the cache"
        )
    await cold.stop()

    client = ModelClient(config)  # as the daemon runs it: system prompt evaluated at start
    await client.start()
    await client.ready.wait()
    latencies: list[float] = []
    tokens: list[int] = []
    failed = 0
    for i in range(requests):
        text = MESSAGES[i % len(MESSAGES)]
        slots = await client.extract(text, {})
        if slots is None:
            failed += 1  # e.g. JSON cut off at max_tokens: the caller would go on without it
            continue
        latencies.append(client.stats.last_latency or 0.0)
        tokens.append(client.stats.last_tokens or 0)
        if i < len(MESSAGES):
            print(f"  {text[:50]!r} -> {slots}")
    await client.stop()
    print(
        f"warm extraction over {requests} requests ({failed} without an answer): "
        f"p50 {percentile(latencies, 0.5):.3f} s, p95 {percentile(latencies, 0.95):.3f} s, "
        f"mean {statistics.mean(latencies):.3f} s; output tokens mean "
        f"{statistics.mean(tokens):.0f}, max {max(tokens)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "model", nargs="?", type=Path, default=ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    load, speed, tokens = generation_speed(args.model, args.threads)
    size = args.model.stat().st_size / 1e6
    print(f"model {args.model.name} ({size:.0f} MB), {args.threads} threads")
    print(f"load {load:.2f} s; generation {speed:.1f} tokens/s ({tokens} tokens, no grammar)")
    asyncio.run(extraction(args.model, args.threads, args.requests))


if __name__ == "__main__":
    main()
