"""The daemon's side of the local model: a supervised worker process and a timid client.

Inference runs in :mod:`callcatch.conversation.worker`, a separate process, because native
code can crash, hang or take seconds, and the daemon's event loop must keep detecting missed
calls and sending texts whatever it does. The client never raises to the conversation: every
failure (no model, not ready, busy, crashed, slower than ``reply_timeout``) is ``None``, and
the conversation then goes on with deterministic extraction alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callcatch.config import ConversationConfig
from callcatch.tasks import Backoff, TaskSet, sleep_unless

log = logging.getLogger("callcatch.model")

LOAD_TIMEOUT = 180.0  # a 3B model on a slow disk loads in well under this
STOP_TIMEOUT = 5.0
HARD_LIMIT_MIN = 20.0
STREAM_LIMIT = 1 << 20  # bytes in one protocol line


@dataclass
class ModelStats:
    requests: int = 0
    answered: int = 0
    timeouts: int = 0
    rejected_busy: int = 0
    skipped_queue: int = 0  # not asked: the queue ahead would outlast reply_timeout
    errors: int = 0
    restarts: int = 0
    hard_kills: int = 0
    last_latency: float | None = None  # seconds, as the client saw it
    last_tokens: int | None = None  # generated
    last_prompt_tokens: int | None = None
    last_reused_tokens: int | None = None  # prompt tokens served from the KV cache
    load_seconds: float | None = None


class ModelClient:
    """Starts, feeds and restarts the model worker; ``extract`` answers or returns None.

    One request is in flight at a time; others wait their turn, each for at most
    ``reply_timeout``. A request the queue ahead of it would keep waiting longer than that
    (judged by how long answers have been taking) is not asked at all: its caller gets a
    reply at once instead of at the timeout. A request that times out leaves the worker
    busy: later requests return None at once until the late answer arrives, and a worker
    stuck past ``hard_limit`` is killed and restarted.
    """

    def __init__(
        self,
        config: ConversationConfig,
        *,
        warmup: bool = True,
        hard_limit: float | None = None,
        worker_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.reply_timeout = config.reply_timeout
        self.hard_limit = hard_limit or max(HARD_LIMIT_MIN, 4 * config.reply_timeout)
        self.warmup = warmup
        self.worker_args = worker_args
        self.ready = asyncio.Event()
        self.stats = ModelStats()
        self.available = False  # a model file and llama_cpp are there
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._tasks = TaskSet("model", log)
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[dict[str, Any] | None]] = {}
        self._stuck: int | None = None  # the id of a timed-out request still running
        self._watchdog: asyncio.TimerHandle | None = None
        self._backoff = Backoff(first=0.5, cap=30.0)
        self._queued = 0  # extractions waiting for the worker or in it
        # How long an answer takes, smoothed over recent ones; None until the first.
        self.typical: float | None = None

    @property
    def busy(self) -> bool:
        return self._stuck is not None

    async def start(self) -> None:
        """Start the worker in the background (``ready`` is set once the model is loaded);
        without a usable model, log one line and stay in "no model" mode."""
        path = self.config.model_path
        if path is None:
            log.info("model: no model_path set; conversations use deterministic extraction")
            return
        if not path.is_file():
            log.warning(
                "model: %s not found (see models/README.md); conversations use "
                "deterministic extraction",
                path,
            )
            return
        if importlib.util.find_spec("llama_cpp") is None:
            log.warning(
                "model: llama-cpp-python is not installed (scripts/setup.sh installs it); "
                "conversations use deterministic extraction"
            )
            return
        self.available = True
        self._stopping.clear()
        self._tasks.spawn(self._supervise())

    async def stop(self) -> None:
        self._stopping.set()
        await self._end_process()
        await self._tasks.drain()
        self.ready.clear()

    async def extract(
        self, text: str, context: Mapping[str, Any] | None = None
    ) -> dict[str, str | None] | None:
        """The slots the model read in ``text`` (every key, str or None), or None."""
        try:
            return await self._extract(text, context)
        except Exception:  # the conversation must go on whatever happens here
            log.exception("model: extraction failed")
            self.stats.errors += 1
            return None

    async def _extract(
        self, text: str, context: Mapping[str, Any] | None
    ) -> dict[str, str | None] | None:
        if not self.ready.is_set() or self._stuck is not None:
            if self._stuck is not None:
                self.stats.rejected_busy += 1
            return None
        # Only with others ahead: a request alone is always asked (and keeps ``typical`` fresh).
        wait = (self._queued + 1) * (self.typical or 0.0)
        if self._queued and wait > self.reply_timeout:
            self.stats.skipped_queue += 1
            return None
        known = {k: v for k, v in (context or {}).items() if isinstance(v, str)}
        request = {"op": "extract", "text": text, "context": known}
        self._queued += 1
        try:
            answer = await self._ask(request, self.reply_timeout)
        finally:
            self._queued -= 1
        if answer is None:
            return None
        if not answer.get("ok"):
            self.stats.errors += 1
            log.warning("model: request failed: %s", answer.get("error"))
            return None
        self.stats.answered += 1
        took = float(answer.get("seconds") or 0.0)
        self.typical = took if self.typical is None else 0.7 * self.typical + 0.3 * took
        self.stats.last_tokens = answer.get("tokens")
        self.stats.last_prompt_tokens = answer.get("prompt_tokens")
        self.stats.last_reused_tokens = answer.get("reused_tokens")
        log.debug(
            "model: answered %s: %s tokens, prompt %s (%s cached), %s s in the worker",
            answer.get("id"),
            answer.get("tokens"),
            answer.get("prompt_tokens"),
            answer.get("reused_tokens"),
            answer.get("seconds"),
        )
        slots = answer.get("slots")
        if not isinstance(slots, dict):
            return None
        return {k: v if isinstance(v, str) else None for k, v in slots.items()}

    async def ping(self, within: float = 2.0) -> bool:
        """True when the worker answers a ping within ``within`` seconds."""
        if not self.ready.is_set() or self._stuck is not None:
            return False
        answer = await self._ask({"op": "ping"}, within)
        return bool(answer and answer.get("pong"))

    async def _ask(self, request: dict[str, Any], within: float) -> dict[str, Any] | None:
        started = time.monotonic()
        rid: int | None = None
        try:
            async with asyncio.timeout(within):
                async with self._lock:
                    process = self.process
                    if self._stuck is not None or process is None or process.stdin is None:
                        return None
                    rid = next(self._ids)
                    future: asyncio.Future[dict[str, Any] | None] = (
                        asyncio.get_running_loop().create_future()
                    )
                    self._pending[rid] = future
                    self.stats.requests += 1
                    line = json.dumps({"id": rid, **request}, ensure_ascii=False) + "\n"
                    process.stdin.write(line.encode("utf-8"))
                    await process.stdin.drain()
                    self._arm_watchdog(rid)
                    # shield: on timeout the future stays for the late answer to resolve
                    answer = await asyncio.shield(future)
        except TimeoutError:
            self.stats.timeouts += 1
            if rid is not None and rid in self._pending:
                self._stuck = rid
            log.info("model: no answer within %.3f s; going on without it", within)
            return None
        except (ConnectionError, BrokenPipeError, RuntimeError) as exc:
            log.warning("model: worker pipe failed: %r", exc)
            return None
        self.stats.last_latency = time.monotonic() - started
        return answer

    def _arm_watchdog(self, rid: int) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog = asyncio.get_running_loop().call_later(
            self.hard_limit, self._hard_kill, rid
        )

    def _hard_kill(self, rid: int) -> None:
        if rid not in self._pending or self.process is None:
            return
        log.warning("model: worker stuck for %.0f s on one request; killing it", self.hard_limit)
        self.stats.hard_kills += 1
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _resolve(self, rid: Any, answer: dict[str, Any] | None) -> None:
        future = self._pending.pop(rid, None) if isinstance(rid, int) else None
        if future is not None and not future.done():
            future.set_result(answer)
        if rid == self._stuck or not self._pending:
            self._stuck = None
        if not self._pending and self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _fail_all(self) -> None:
        for rid in list(self._pending):
            self._resolve(rid, None)
        self._stuck = None

    async def _supervise(self) -> None:
        """Run the worker; when it dies, restart it after a growing pause."""
        first = True
        while not self._stopping.is_set():
            if not first:
                self.stats.restarts += 1
            first = False
            try:
                await self._run_once()
            except Exception:
                log.exception("model: supervising the worker failed")
            self.ready.clear()
            self._fail_all()
            await self._end_process()
            if self._stopping.is_set():
                break
            delay = self._backoff.next_delay()
            log.warning("model: worker ended; restarting in %.1f s", delay)
            if await sleep_unless(self._stopping, delay):
                break

    async def _run_once(self) -> None:
        config = self.config
        assert config.model_path is not None
        args = [
            "-m",
            "callcatch.conversation.worker",
            "--model",
            str(config.model_path),
            "--context",
            str(config.context_size),
            "--threads",
            str(config.threads),
            *(() if self.warmup else ("--no-warmup",)),
            *self.worker_args,
        ]
        self.process = process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=STREAM_LIMIT,
        )
        assert process.stdout is not None and process.stderr is not None
        self._tasks.spawn(self._forward_stderr(process.stderr))
        try:
            async with asyncio.timeout(LOAD_TIMEOUT):
                line = await process.stdout.readline()
        except TimeoutError:
            log.error("model: worker not ready after %.0f s", LOAD_TIMEOUT)
            return
        hello = _parse(line)
        if not hello or not hello.get("ready"):
            status = await process.wait()
            log.error("model: worker failed to start (exit status %s)", status)
            return
        self.stats.load_seconds = hello.get("load_seconds")
        log.info(
            "model: %s ready (load %.2f s, warm-up %.2f s, pid %s)",
            config.model_path.name,
            hello.get("load_seconds", 0.0),
            hello.get("warmup_seconds", 0.0),
            process.pid,
        )
        self.ready.set()
        while True:
            line = await process.stdout.readline()
            if not line:
                break
            answer = _parse(line)
            if answer is None:
                log.warning("model: unreadable line from the worker: %r", line[:200])
                continue
            if answer.get("ok"):
                self._backoff.reset()  # it served: a later death starts the pauses afresh
            self._resolve(answer.get("id"), answer)
        status = await process.wait()
        if not self._stopping.is_set():
            log.warning("model: worker exited with status %s", status)

    async def _forward_stderr(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            log.info("model worker: %s", line.decode("utf-8", "replace").rstrip()[:500])

    async def _end_process(self) -> None:
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            if process.stdin is not None and not process.stdin.is_closing():
                process.stdin.close()  # EOF: the worker leaves its loop and exits
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self.process is process:
            self.process = None


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
