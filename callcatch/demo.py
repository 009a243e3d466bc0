"""``callcatch demo``: the whole product in one process, with stand-ins for the PBX and the
modem, so anyone can see it work: a missed call, the text the caller gets, the
conversation (the person at the terminal plays the caller), the booking, and the owner's
summary.

Only the two ends are stand-ins. The missed call goes through the same recorder, text-back
policy, outbox and worker as in ``callcatch run``; the stand-in modem receives real AT+CMGS
PDUs (decoded for display) and hands the caller's replies in as real SMS-DELIVER PDUs; the
conversation runs on the configured local model in its own worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from time import perf_counter
from typing import Any

from gsmmodem.pdu import decodeSmsPdu

from callcatch import booking
from callcatch import config as configuration
from callcatch.calls import CallRecord, Detection, Outcome
from callcatch.conversation.machine import Assistant, Turn
from callcatch.conversation.model import ModelClient
from callcatch.daemon import outbox_sender
from callcatch.recorder import Recorder
from callcatch.sms import pdu
from callcatch.sms.inbox import Inbox
from callcatch.sms.outbox import OutboxWorker
from callcatch.store import AsyncStore, Store
from callcatch.store import conversations as cq
from callcatch.store import texts as q
from callcatch.textback import TextBack

DEMO_CALLER = "+12125550147"
DEMO_OWNER = "+12125550188"
SETTLE_SECONDS = 0.2
MODEL_LOAD_WAIT = 60.0


@dataclass
class Transcript:
    lines: list[dict[str, str]] = field(default_factory=list)
    owner: list[str] = field(default_factory=list)
    echo: bool = True

    def add(self, who: str, text: str) -> None:
        self.lines.append({"from": who, "text": text})
        if who == "owner":
            self.owner.append(text)
        if self.echo:
            label = {
                "shop": "📱 shop → caller",
                "caller": "💬 caller → shop",
                "owner": "📟 → owner",
            }
            print(f"{label.get(who, who)}: {text}", flush=True)


class DemoModem:
    """Stands where the USB modem would be: takes AT+CMGS PDUs, joins multipart texts."""

    def __init__(self, transcript: Transcript, owner_numbers: Iterable[str]) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.transcript = transcript
        self.owners = set(owner_numbers)
        self._parts: dict[tuple[str, int], dict[int, str]] = {}
        self._reference = 0

    async def send_pdu(self, pdu_hex: str, tpdu_length: int) -> int:
        del tpdu_length
        decoded = decodeSmsPdu(pdu_hex)
        number, text = str(decoded["number"]), str(decoded["text"])
        concat = next((u for u in decoded.get("udh") or [] if hasattr(u, "parts")), None)
        if concat is not None:
            parts = self._parts.setdefault((number, concat.reference), {})
            parts[concat.number] = text
            if len(parts) < concat.parts:
                return self._next_reference()
            text = "".join(parts[i] for i in sorted(parts))
            del self._parts[(number, concat.reference)]
        self.transcript.add("owner" if number in self.owners else "shop", text)
        return self._next_reference()

    def _next_reference(self) -> int:
        self._reference = (self._reference + 1) % 256
        return self._reference


DEFAULT_MODEL = Path("models/SmolLM2-135M-Instruct.Q4_1.gguf")


def demo_config(path: Path | None, data: Path, model: Path | None) -> configuration.Config:
    """The given business profile, or the embedded demo one (open every day, so the demo
    works at any hour); the store always goes in ``data``. The model: ``model``, else the
    profile's, else models/ in the current folder."""
    embedded = path is None
    if path is None:
        path = data / "demo.toml"
        text = resources.files("callcatch").joinpath("demo.toml").read_text(encoding="utf-8")
        path.write_text(text, encoding="utf-8")
    loaded = configuration.load(path)
    model_path = model or loaded.conversation.model_path or DEFAULT_MODEL.resolve()
    owner = loaded.owner
    if not owner.numbers:
        owner = replace(owner, numbers=(DEMO_OWNER,))
    hours = loaded.hours
    if embedded:
        hours = configuration.HoursConfig(week=(((time(8), time(18)),),) * 7, holidays=frozenset())
    return replace(
        loaded,
        store=configuration.StoreConfig(path=data / "callcatch.db"),
        conversation=replace(loaded.conversation, model_path=model_path),
        owner=owner,
        hours=hours,
    )


async def run_demo(
    config: configuration.Config,
    messages: Callable[[], str | None],
    *,
    echo: bool = True,
    turn_timeout: float = 60.0,
    model: ModelClient | None = None,
    until_booked: bool = True,
) -> dict[str, Any]:
    """Fire one missed call, then feed the caller's ``messages`` until they run out, or,
    with ``until_booked``, until the job is booked and the owner told. Returns the
    transcript as data, with each caller text's handling time under ``turns``.

    ``model``: a started client to use (and leave running), as when one worker serves many
    runs; by default the demo starts its own on the configured model and stops it after.
    """
    store = AsyncStore(Store(config.store.path, config.business.country))
    transcript = Transcript(echo=echo)
    wakeup = asyncio.Event()
    stopping = asyncio.Event()
    modem = DemoModem(transcript, config.owner.numbers)
    own_model = model is None
    if model is None:
        model = ModelClient(config.conversation)
        await model.start()
        model_path = config.conversation.model_path
        if model_path is not None and await asyncio.to_thread(model_path.exists):
            # The demo shows the model at work: give it its load time before the first text.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(model.ready.wait(), MODEL_LOAD_WAIT)

    assistant = Assistant(config, store, model, outbox_sender(store, wakeup))
    inbox = Inbox(config, store, wakeup, "demo")
    answered: list[Turn] = []

    async def converse(number: str, text: str) -> Turn:
        turn = await assistant.handle(number, text)
        answered.append(turn)
        return turn

    inbox.converse = converse
    inbox.take_over = assistant.take_over
    inbox.opted_out = assistant.opted_out
    turns: list[dict[str, Any]] = []
    # The network stamps a text to the second, and the inbox takes the same sender, stamp and
    # words for one text delivered twice: a script's quick "1" ... "1" gets its own seconds.
    stamp = datetime.now(UTC) - timedelta(seconds=1)
    textback = TextBack(config, store, wakeup)
    recorder = Recorder(store)
    recorder.on_missed.append(textback.on_missed)
    modem_config = configuration.ModemConfig(
        name="demo", port=Path("/dev/null"), baud=115200, pin=None, smsc="",
        pace_seconds=0, command_timeout=5, send_timeout=5, health_interval=60,
    )  # fmt: skip
    worker = OutboxWorker(modem, modem_config, config.textback, store, wakeup)  # type: ignore[arg-type]
    worker_task = asyncio.create_task(worker.run(stopping))
    try:
        now = datetime.now(UTC)
        await recorder.record(
            CallRecord(
                linkedid=f"demo-{now.timestamp():.3f}",
                caller=DEMO_CALLER,
                caller_name="",
                did="demo",
                forwarded_from=None,
                line="demo",
                started_at=now - timedelta(seconds=25),
                ended_at=now,
                outcome=Outcome.NO_ANSWER,
                detected_by=Detection.AMI,
                signal="demo",
            )
        )
        await _settle(store)
        while True:
            booked = await store.call(cq.current, DEMO_CALLER)
            done = booked is not None and booked.state == cq.BOOKED and transcript.owner
            if until_booked and done:
                break
            message = messages()
            if message is None:
                break
            if not message.strip():
                continue
            transcript.add("caller", message)
            before = len(answered)
            began = perf_counter()
            stamp = max(datetime.now(UTC), stamp + timedelta(seconds=1))
            for part in pdu.encode_deliver(DEMO_CALLER, message, sent_at=stamp):
                await inbox.on_sms(part)
            await asyncio.wait_for(inbox.tasks.drain(), turn_timeout)
            seconds = perf_counter() - began
            turn = answered[-1] if len(answered) > before else None
            turns.append(
                {
                    "seconds": round(seconds, 4),
                    "assistant": turn is not None,
                    "model_used": bool(turn and turn.model_used),
                }
            )
            await _settle(store)
        conversation = await store.call(cq.current, DEMO_CALLER)
        bookings = [b for b in await store.call(booking.bookings) if b["number"] == DEMO_CALLER]
        return {
            "transcript": transcript.lines,
            "slots": conversation.slots if conversation else {},
            "state": conversation.state if conversation else None,
            "booking": bookings[0] if bookings else None,
            "owner_texts": transcript.owner,
            "turns": turns,
        }
    finally:
        stopping.set()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        if own_model:
            await model.stop()
        store.close()


async def _settle(store: AsyncStore) -> None:
    """Wait until the outbox has nothing left to send (the stand-in modem is instant)."""
    for _ in range(200):
        queued = await store.call(q.outbox, q.QUEUED)
        sending = await store.call(q.outbox, q.SENDING)
        if not queued and not sending:
            await asyncio.sleep(SETTLE_SECONDS)
            if not await store.call(q.outbox, q.QUEUED):
                return
        await asyncio.sleep(0.05)


def interactive_messages() -> Callable[[], str | None]:
    def read() -> str | None:
        try:
            return input("you (the caller) > ")
        except EOFError:
            return None

    return read


def scripted_messages(lines: list[str]) -> Callable[[], str | None]:
    queue = [line.rstrip("\n") for line in lines if line.strip()]

    def read() -> str | None:
        return queue.pop(0) if queue else None

    return read


def main(
    config_path: str | None, script: str | None, as_json: bool, data: str, model: str | None
) -> int:
    data_dir = Path(data)
    data_dir.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"callcatch.db{suffix}").unlink(missing_ok=True)
    config = demo_config(
        Path(config_path) if config_path else None, data_dir, Path(model) if model else None
    )
    if script is not None:
        lines = Path(script).read_text(encoding="utf-8").splitlines()
        messages = scripted_messages(lines)
    else:
        print(
            f"callcatch demo for {config.business.name}: a call to the shop was just missed.\n"
            "You are the caller: answer the texts (Ctrl-D to stop).\n",
            flush=True,
        )
        messages = interactive_messages()
    result = asyncio.run(run_demo(config, messages, echo=not as_json))
    if as_json:
        json.dump(result, sys.stdout, indent=2, default=str)
        print()
    elif result["booking"]:
        print("\nBooked. The owner's phone got the summary above.")
    return 0
