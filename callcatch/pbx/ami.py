"""The AMI watcher: one connection to Asterisk's manager interface, kept alive.

panoramisk's protocol parses frames and matches responses to actions; the connection's life
is ours: a Ping every few seconds whose Pong must come back in time (a half-open TCP
connection is noticed within ``ping_interval + pong_timeout``), reconnects paced by
:class:`~callcatch.backoff.Backoff` (the first under a second, then at most 30 s apart), and
after each login a ``CoreShowChannels`` resync so calls already ringing are tracked.
Calls that ended while we were away are the CDR backfill's (``on_connected``).
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from panoramisk.ami_protocol import AMIProtocol

from callcatch.config import AmiConfig
from callcatch.pbx.rules import CallbackAnswered, CallRules
from callcatch.recorder import Recorder
from callcatch.tasks import Backoff, TaskSet, sleep_unless

log = logging.getLogger(__name__)

_ACTIONS = ("login", "logoff", "ping", "coreshowchannels", "getvar")


class AmiError(Exception):
    """The manager refused us (bad credentials or permissions)."""


class _Protocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with three holes closed: a character split across two reads is
    kept (it decoded each read on its own), a frame with a repeated ``Event`` header no
    longer drops the connection, and actions waiting when the connection goes fail at once
    instead of hanging until their timeout."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def data_received(self, data: bytes) -> None:
        super().data_received(self._decoder.decode(data).encode("utf-8"))

    def handle_message(self, message: Any) -> None:
        event = message.get("Event")
        if isinstance(event, list):
            message["Event"] = event[-1] if event else ""
        try:
            super().handle_message(message)
        except Exception:
            log.exception("AMI: a frame could not be handled and was skipped")

    def connection_lost(self, exc: Exception | None) -> None:
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionResetError("AMI connection lost"))
        super().connection_lost(exc)


class _Link:
    """What panoramisk's protocol expects of its factory, for one connection."""

    save_stream = None
    # Never replay an action on the next connection: each session asks afresh.
    forgetable_actions = _ACTIONS

    def __init__(self, dispatch: Callable[[Mapping[str, Any]], None]) -> None:
        self.dispatch = dispatch
        self.awaiting_actions: deque[Any] = deque()
        self.lost = asyncio.Event()

    def connection_lost(self, exc: object) -> None:
        self.lost.set()


class AmiWatcher:
    def __init__(
        self,
        config: AmiConfig,
        rules: CallRules,
        recorder: Recorder,
        on_connected: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.config = config
        self.rules = rules
        self.recorder = recorder
        self.on_connected = on_connected
        self.connected = asyncio.Event()
        self.tasks = TaskSet("AMI", log)
        self._protocol: _Protocol | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        while not stopping.is_set():
            try:
                await self._session(stopping, backoff)
            except AmiError as exc:
                log.error(
                    "AMI login to %s:%s refused: %s", self.config.host, self.config.port, exc
                )
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "AMI %s:%s unreachable: %s",
                    self.config.host,
                    self.config.port,
                    exc or "timeout",
                )
            finally:
                self.connected.clear()
                self._protocol = None
                self.rules.forget()
            if stopping.is_set():
                break
            delay = backoff.next_delay()
            log.info("AMI reconnecting in %.1f s", delay)
            if await sleep_unless(stopping, delay):
                break

    async def drain(self) -> None:
        """Wait for decisions already made to be committed."""
        await self.tasks.drain()

    async def _session(self, stopping: asyncio.Event, backoff: Backoff) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config.connect_timeout
        link = _Link(self._dispatch)
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(_Protocol, self.config.host, self.config.port), timeout
        )
        try:
            protocol.factory = link
            protocol.encoding = "utf-8"
            protocol.log = logging.getLogger("panoramisk")
            login = await self._action(
                protocol,
                {
                    "Action": "Login",
                    "Username": self.config.username,
                    "Secret": self.config.secret.value,
                    "Events": "on",
                },
            )
            if not login.success:
                raise AmiError(login.get("Message", "login failed"))
            self._protocol = protocol
            backoff.reset()
            log.info("AMI connected to %s:%s", self.config.host, self.config.port)
            await self._resync(protocol)
            self.connected.set()
            if self.on_connected is not None:
                self.tasks.spawn(self.on_connected())
            await self._keep_alive(protocol, link, stopping)
        finally:
            transport.close()

    async def _action(self, protocol: _Protocol, action: dict[str, str]) -> Any:
        return await asyncio.wait_for(protocol.send(action), self.config.connect_timeout)

    async def _resync(self, protocol: _Protocol) -> None:
        """Track calls already in progress: every live channel, as if it were new."""
        reply = await asyncio.wait_for(
            protocol.send({"Action": "CoreShowChannels"}, as_list=True),
            self.config.connect_timeout,
        )
        messages = reply if isinstance(reply, list) else [reply]
        count = 0
        for message in messages:
            if str(message.get("Event", "")).startswith("CoreShowChannel"):
                self._dispatch(message)
                count += message.get("Event") == "CoreShowChannel"
        log.info(
            "AMI resync: %d live channel(s), %d inbound call(s)", count, len(self.rules.calls)
        )

    async def _keep_alive(self, protocol: _Protocol, link: _Link, stopping: asyncio.Event) -> None:
        lost = asyncio.ensure_future(link.lost.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {lost, stop}, timeout=self.config.ping_interval, return_when="FIRST_COMPLETED"
                )
                if lost in done:
                    log.warning("AMI connection lost")
                    return
                if stop in done:
                    return
                try:
                    await asyncio.wait_for(
                        protocol.send({"Action": "Ping"}), self.config.pong_timeout
                    )
                except TimeoutError:
                    log.warning(
                        "AMI: no answer to Ping within %.1f s, dropping the connection",
                        self.config.pong_timeout,
                    )
                    return
        finally:
            lost.cancel()
            stop.cancel()

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        """Called by the protocol for each event, on the event loop; must never raise."""
        try:
            decisions = self.rules.handle(message)
        except Exception:
            log.exception(
                "call %s: the rules failed on a %s event",
                message.get("Linkedid", "?"),
                message.get("Event", "?"),
            )
            return
        for decision in decisions:
            if isinstance(decision, CallbackAnswered):
                self.tasks.spawn(self.recorder.callback(decision))
            else:
                self.tasks.spawn(self.recorder.record(decision))
        if message.get("Event") == "Newchannel":
            self._ask_forwarded_from(message)

    def _ask_forwarded_from(self, message: Mapping[str, Any]) -> None:
        linkedid = message.get("Linkedid")
        if not isinstance(linkedid, str) or linkedid not in self.rules.calls:
            return
        if message.get("Uniqueid") != linkedid or self._protocol is None:
            return
        self.tasks.spawn(
            self._get_forwarded_from(self._protocol, linkedid, str(message["Channel"]))
        )

    async def _get_forwarded_from(self, protocol: _Protocol, linkedid: str, channel: str) -> None:
        """A call forwarded to us carries the forwarding number in REDIRECTING()."""
        action = {"Action": "Getvar", "Channel": channel, "Variable": "REDIRECTING(from-num)"}
        try:
            reply = await self._action(protocol, action)
        except (TimeoutError, OSError) as exc:
            log.debug("call %s: Getvar REDIRECTING failed: %s", linkedid, exc or "timeout")
            return
        value = reply.get("Value") if reply.success else None
        if isinstance(value, str) and value.strip() and value != "(null)":
            self.rules.set_forwarded_from(linkedid, value.strip())
