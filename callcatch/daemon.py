"""``callcatch run``: start the parts, keep them running, and stop them cleanly.

The AMI watcher and the ARI application each run as one supervised task; a part that fails
unexpectedly is logged and restarted after a pause, never taking the others down. On
SIGTERM or SIGINT the parts are told to stop, decisions already made are committed (drain),
and whatever is still running after a grace period is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from callcatch.config import Config
from callcatch.conversation.machine import Assistant
from callcatch.conversation.model import ModelClient
from callcatch.owner import DailyDigest, OwnerNotifier
from callcatch.pbx.ami import AmiWatcher
from callcatch.pbx.ari import AriApp
from callcatch.pbx.cdr import Backfill
from callcatch.pbx.rules import CallRules, LineMatcher
from callcatch.recorder import Recorder
from callcatch.sms.inbox import Inbox
from callcatch.sms.modem import Modem
from callcatch.sms.outbox import OutboxWorker
from callcatch.store import AsyncStore, Store
from callcatch.store import texts as q
from callcatch.tasks import sleep_unless
from callcatch.textback import TextBack

log = logging.getLogger(__name__)

GRACE_SECONDS = 5.0
REPLY_EXPIRY = timedelta(hours=2)
RESTART_PAUSE = 2.0


async def _supervised(
    name: str, run: Callable[[asyncio.Event], Awaitable[None]], stopping: asyncio.Event
) -> None:
    while not stopping.is_set():
        try:
            await run(stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; restarting it in %.0f s", name, RESTART_PAUSE)
            if await sleep_unless(stopping, RESTART_PAUSE):
                return
        else:
            return


async def run(config: Config) -> None:
    store = AsyncStore(Store(config.store.path, config.business.country))
    recorder = Recorder(store, show_numbers=config.log.show_numbers)
    lines = LineMatcher(config.lines.trunks + config.lines.analog)
    backfill = Backfill(config.cdr, lines, recorder)
    ami = AmiWatcher(config.ami, CallRules(lines), recorder, on_connected=backfill.run_once)
    parts: dict[str, Callable[[asyncio.Event], Awaitable[None]]] = {"AMI watcher": ami.run}
    ari = None
    if config.ari.enabled:
        ari = AriApp(config.ari, recorder, ping_interval=config.ami.ping_interval)
        parts["ARI application"] = ari.run

    wakeup = asyncio.Event()
    textback = TextBack(config, store, wakeup)
    recorder.on_missed.append(textback.on_missed)
    model = ModelClient(config.conversation) if config.conversation.enabled else None
    assistant = Assistant(config, store, model, outbox_sender(store, wakeup)) if model else None
    if assistant is not None:
        parts["stalled conversations"] = _every(60.0, assistant.summarise_stalled)
    inboxes = []
    for modem_config in config.modems:
        inbox = Inbox(config, store, wakeup, modem_config.name)
        if assistant is not None:
            inbox.converse = assistant.handle
            inbox.take_over = assistant.take_over
            inbox.opted_out = assistant.opted_out
        modem = Modem(
            modem_config,
            on_sms=inbox.on_sms,
            on_status_report=inbox.on_status_report,
            on_identity=_saver(store, modem_config.name),
            on_health=_saver(store, modem_config.name),
        )
        worker = OutboxWorker(modem, modem_config, config.textback, store, wakeup)
        parts[f"modem {modem_config.name}"] = modem.run
        parts[f"outbox worker {modem_config.name}"] = worker.run
        inboxes.append(inbox)
    if not config.modems:
        log.warning("no [[modem]] configured: text-backs wait in the outbox")
    if config.owner.notify and config.owner.numbers:
        parts["owner notifier"] = OwnerNotifier(config, store, wakeup).run
    if config.owner.daily_digest is not None and config.owner.numbers:
        parts["daily digest"] = _every(60.0, DailyDigest(config, store, wakeup).send_if_due)

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, signum, stopping)

    log.info("callcatch running for %s, store %s", config.business.name, config.store.path)
    tasks = [
        asyncio.create_task(_supervised(name, part, stopping), name=name)
        for name, part in parts.items()
    ]
    try:
        if model is not None:
            await model.start()
        await backfill.run_once()
        await textback.catch_up()
        if inboxes:
            await inboxes[0].collect_stale_parts()
            await inboxes[0].handle_pending()
        await stopping.wait()
        log.info("stopping: draining")
        _, pending = await asyncio.wait(tasks, timeout=GRACE_SECONDS)
        for task in pending:
            log.warning("%s did not stop in %.0f s; cancelling it", task.get_name(), GRACE_SECONDS)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ami.drain()
        if ari is not None:
            await ari.drain()
        for inbox in inboxes:
            await inbox.tasks.drain()
        if model is not None:
            await model.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        store.close()
        log.info("stopped")


def _saver(store: AsyncStore, name: str) -> Callable[[Any], Awaitable[None]]:
    """Keep what a modem reports about itself (identity, health) in the store."""

    async def save(report: Any) -> None:
        await store.call(q.save_modem, name, q.now_utc(), **asdict(report))

    return save


def outbox_sender(
    store: AsyncStore, wakeup: asyncio.Event
) -> Callable[[str, str, str], Awaitable[None]]:
    """How the assistant sends: a reply to the caller, or a text to the owner."""

    async def send(kind: str, number: str, body: str) -> None:
        now = q.now_utc()
        await store.call(
            q.queue,
            kind=q.OWNER if kind == "owner" else q.REPLY,
            number=number,
            body=body,
            now=now,
            expires_at=now + REPLY_EXPIRY,
        )
        wakeup.set()

    return send


def _every(
    seconds: float, job: Callable[[], Awaitable[object]]
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """``job`` at start, then every ``seconds`` until stopping."""

    async def run(stopping: asyncio.Event) -> None:
        await job()
        while not await sleep_unless(stopping, seconds):
            await job()

    return run


def _on_signal(signum: int, stopping: asyncio.Event) -> None:
    log.info("received %s", signal.Signals(signum).name)
    stopping.set()
