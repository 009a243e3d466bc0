"""The Stasis application against a fake ARI server (aiohttp.web on 127.0.0.1, a free port).

The fake serves ``/ari/events`` (basic auth and the ``app`` parameter checked), channel
variables, answer, play (a PlaybackFinished follows over the socket, or never) and hangup;
it can refuse the password, drop the socket, or hold it without reading (no pongs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from callcatch.calls import CallRecord
from callcatch.config import AriConfig, Secret
from callcatch.pbx.ari import AriApp
from callcatch.recorder import Recorder
from callcatch.store import AsyncStore, Store
from tests.waiting import messages, until

PING = 0.2  # AriApp's WebSocket heartbeat; a pong is due within half of it
FIRST_BACKOFF = 0.5
CHANNEL = "1760001000.7"
LINKEDID = "1760001000.5"
FORWARDER = "2125550199"

Row = dict[str, Any]


# -- the fake server ----------------------------------------------------------------------


@dataclass
class Request:
    at: float
    method: str
    path: str
    query: dict[str, str]


class FakeAri:
    def __init__(self, username: str = "callcatch", password: str = "ari-secret") -> None:
        self.username = username
        self.password = password
        self.app_name = "callcatch"
        self.variables = {
            "CHANNEL(linkedid)": LINKEDID,
            "REDIRECTING(from-num)": FORWARDER,
            "REDIRECTING(reason)": "cfb",
        }
        self.gone: set[str] = set()  # channels answering 404, as after the caller hung up
        self.playback_takes: float | None = 0.1  # None: the playback never finishes
        self.hold_sockets = False  # accept the socket, then never read it (no pongs)
        self.port = 0
        self.requests: list[Request] = []
        self.refused: list[tuple[float, int]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.socket_times: list[float] = []
        self.pushed: list[tuple[float, dict[str, Any]]] = []
        self._playbacks = 0
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_get("/ari/channels/{id}/variable", self._variable)
        app.router.add_post("/ari/channels/{id}/answer", self._answer)
        app.router.add_post("/ari/channels/{id}/play", self._play)
        app.router.add_delete("/ari/channels/{id}", self._hangup)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self._release.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for ws in self.sockets:
            if not ws.closed:
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def live(self) -> web.WebSocketResponse:
        open_sockets = [ws for ws in self.sockets if not ws.closed]
        assert open_sockets, "no event socket is open"
        return open_sockets[-1]

    async def send(self, event: dict[str, Any] | str | bytes) -> None:
        """An event (or anything else) over the newest open event socket."""
        ws = self.live
        if isinstance(event, bytes):
            await ws.send_bytes(event)
        elif isinstance(event, str):
            await ws.send_str(event)
        else:
            self.pushed.append((time.monotonic(), event))
            await ws.send_str(json.dumps(event))

    def calls_to(self, method: str, suffix: str = "") -> list[Request]:
        return [r for r in self.requests if r.method == method and r.path.endswith(suffix)]

    # -- handlers ---------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        try:
            auth = aiohttp.BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            return False
        return bool(auth.login == self.username and auth.password == self.password)

    def _log(self, request: web.Request) -> None:
        self.requests.append(
            Request(time.monotonic(), request.method, request.path, dict(request.query))
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.refused.append((time.monotonic(), 401))
            return web.json_response(
                {"message": "Authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Asterisk REST Interface"'},
            )
        if request.query.get("app") != self.app_name:
            self.refused.append((time.monotonic(), 400))
            return web.json_response({"message": "Invalid application provided"}, status=400)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        self.socket_times.append(time.monotonic())
        if self.hold_sockets:
            await self._release.wait()  # pings pile up unread: no pong ever goes back
        else:
            async for _ in ws:
                pass
        return ws

    async def _variable(self, request: web.Request) -> web.Response:
        self._log(request)
        name = request.query.get("variable", "")
        if request.match_info["id"] in self.gone:
            return web.json_response({"message": "Channel not found"}, status=404)
        if name not in self.variables:
            return web.json_response({"message": "Provided variable was not found"}, status=404)
        return web.json_response({"value": self.variables[name]})

    async def _answer(self, request: web.Request) -> web.Response:
        self._log(request)
        if request.match_info["id"] in self.gone:
            return web.json_response({"message": "Channel not found"}, status=404)
        return web.Response(status=204)

    async def _play(self, request: web.Request) -> web.Response:
        self._log(request)
        channel = request.match_info["id"]
        if channel in self.gone:
            return web.json_response({"message": "Channel not found"}, status=404)
        self._playbacks += 1
        playback = {
            "id": f"pb-{self._playbacks}",
            "media_uri": request.query.get("media", ""),
            "target_uri": f"channel:{channel}",
            "language": "en",
            "state": "queued",
        }
        if self.playback_takes is not None:
            task = asyncio.create_task(self._finish(playback, self.playback_takes))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(playback, status=201)

    async def _finish(self, playback: dict[str, Any], after: float) -> None:
        await asyncio.sleep(after)
        done = {**playback, "state": "done"}
        await self.send({"type": "PlaybackFinished", "application": "callcatch", "playback": done})

    async def _hangup(self, request: web.Request) -> web.Response:
        self._log(request)
        if request.match_info["id"] in self.gone:
            return web.json_response({"message": "Channel not found"}, status=404)
        return web.Response(status=204)


def stasis_start(*args: str, channel: str = CHANNEL, caller: str = "2125550123") -> dict[str, Any]:
    return {
        "type": "StasisStart",
        "timestamp": "2026-01-05T12:00:03.456+0000",
        "args": list(args),
        "channel": {
            "id": channel,
            "name": "PJSIP/carrier-0000000a",
            "state": "Ring",
            "protocol_id": "abc@203.0.113.5",
            "caller": {"name": "Jane Roe", "number": caller},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": "callcatch-forwarded",
                "exten": "5551000",
                "priority": 2,
                "app_name": "Stasis",
                "app_data": "callcatch," + ",".join(args),
            },
            "creationtime": "2026-01-05T12:00:00.123+0000",
            "language": "en",
        },
        "asterisk_id": "52:54:00:12:34:56",
        "application": "callcatch",
    }


# -- the rig ------------------------------------------------------------------------------


class CountingRecorder(Recorder):
    def __init__(self, store: AsyncStore) -> None:
        super().__init__(store, show_numbers=True)
        self.reports: list[tuple[float, CallRecord]] = []

    async def record(self, call: CallRecord) -> bool:
        new = await super().record(call)
        self.reports.append((time.monotonic(), call))
        return new


@dataclass
class Rig:
    ari: FakeAri
    app: AriApp
    recorder: CountingRecorder
    store: AsyncStore
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def start(self, wait_connected: bool = True) -> None:
        self.task = asyncio.create_task(self.app.run(self.stopping))
        if wait_connected:
            await asyncio.wait_for(self.app.connected.wait(), 2)

    async def rows(self) -> list[Row]:
        return await self.store.run(self.store.store.calls)

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()


def make_app(
    ari: FakeAri,
    recorder: Recorder,
    password: str = "ari-secret",
    app: str = "callcatch",
    greeting: str = "",
    greeting_timeout: float = 1.0,
) -> AriApp:
    config = AriConfig(
        enabled=True,
        url=ari.url,
        username="callcatch",
        password=Secret(password),
        app=app,
        greeting=greeting,
        greeting_timeout=greeting_timeout,
    )
    return AriApp(config, recorder, ping_interval=PING)


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[Callable[..., Rig]]:
    ari = FakeAri()
    await ari.start()
    store = AsyncStore(Store(tmp_path / "callcatch.db", "US"))
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        recorder = CountingRecorder(store)
        rig = Rig(ari, make_app(ari, recorder, **options), recorder, store)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            rig.stopping.set()
        try:
            for rig in made:
                if rig.task is not None:
                    # run() must end by itself when told to stop, never by an exception.
                    await asyncio.wait_for(rig.task, 3)
        finally:
            store.close()
            await ari.stop()


async def deleted(rig: Rig, channel: str = CHANNEL, within: float = 2.0) -> float:
    """When the channel was hung up (DELETE), waiting for it."""
    await until(lambda: bool(rig.ari.calls_to("DELETE", channel)), within, f"DELETE {channel}")
    return rig.ari.calls_to("DELETE", channel)[0].at


# -- calls --------------------------------------------------------------------------------


@pytest.mark.parametrize(("reason", "outcome"), [("cfb", "busy"), ("cfnr", "no-answer")])
async def test_forwarded_call_is_recorded_then_hung_up(
    make_rig: Callable[..., Rig], reason: str, outcome: str
) -> None:
    rig = make_rig()
    rig.ari.variables["REDIRECTING(reason)"] = reason
    await rig.start()
    await rig.ari.send(stasis_start("forwarded"))

    hung_up_at = await deleted(rig)
    [row] = await rig.rows()
    assert row["linkedid"] == LINKEDID
    assert row["detected_by"] == "ari"
    assert row["signal"] == "stasis-forwarded"
    assert row["forwarded_from"] == FORWARDER
    assert row["outcome"] == outcome
    assert row["missed"] == 1
    assert row["caller_e164"] == "+12125550123"
    assert row["did"] == "5551000"
    assert row["line"] == "PJSIP/carrier"
    assert row["started_at"] == "2026-01-05T12:00:00.123+00:00"
    [(recorded_at, _)] = rig.recorder.reports
    assert recorded_at <= hung_up_at, "the call is committed before the channel goes"
    asked = {r.query["variable"] for r in rig.ari.calls_to("GET", "/variable")}
    assert asked == {"CHANNEL(linkedid)", "REDIRECTING(from-num)", "REDIRECTING(reason)"}
    assert not rig.ari.calls_to("POST"), "no greeting configured: nothing answered"


async def test_after_dial_busy(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    rig.ari.variables["REDIRECTING(from-num)"] = ""
    await rig.start()
    await rig.ari.send(stasis_start("after-dial", "BUSY"))

    await deleted(rig)
    [row] = await rig.rows()
    assert row["outcome"] == "busy"
    assert row["signal"] == "stasis-after-dial"
    assert row["forwarded_from"] is None


async def test_greeting_is_answered_played_and_finished_before_hangup(
    make_rig: Callable[..., Rig],
) -> None:
    rig = make_rig(greeting="callcatch-sorry", greeting_timeout=2.0)
    rig.ari.playback_takes = 0.2
    await rig.start()
    await rig.ari.send(stasis_start("forwarded"))

    hung_up_at = await deleted(rig)
    steps = [(r.method, r.path.rsplit("/", 1)[-1]) for r in rig.ari.requests if r.method != "GET"]
    assert steps == [("POST", "answer"), ("POST", "play"), ("DELETE", CHANNEL)]
    [play] = rig.ari.calls_to("POST", "/play")
    assert play.query["media"] == "sound:callcatch-sorry"
    [finished_at] = [at for at, e in rig.ari.pushed if e["type"] == "PlaybackFinished"]
    assert finished_at <= hung_up_at < finished_at + 0.5
    [(recorded_at, _)] = rig.recorder.reports
    assert recorded_at <= rig.ari.calls_to("POST", "/answer")[0].at


async def test_greeting_that_never_finishes_is_cut_after_the_timeout(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(greeting="callcatch-sorry", greeting_timeout=0.4)
    rig.ari.playback_takes = None
    await rig.start()
    await rig.ari.send(stasis_start("forwarded"))

    hung_up_at = await deleted(rig)
    played_at = rig.ari.calls_to("POST", "/play")[0].at
    assert 0.4 <= hung_up_at - played_at < 0.4 + 0.5
    assert messages(caplog, "greeting did not finish")
    assert len(await rig.rows()) == 1


@pytest.mark.parametrize("event", ["StasisEnd", "ChannelDestroyed"])
async def test_caller_leaving_during_the_greeting_ends_the_wait(
    make_rig: Callable[..., Rig], event: str
) -> None:
    rig = make_rig(greeting="callcatch-sorry", greeting_timeout=3.0)
    rig.ari.playback_takes = None
    await rig.start()
    await rig.ari.send(stasis_start("forwarded"))
    await until(lambda: bool(rig.ari.calls_to("POST", "/play")), 2, "play")
    await rig.ari.send({"type": event, "channel": {"id": CHANNEL, "name": "PJSIP/x-1"}})
    left_at = time.monotonic()

    hung_up_at = await deleted(rig)
    assert hung_up_at - left_at < 0.5


async def test_channel_gone_is_still_recorded(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(greeting="callcatch-sorry", greeting_timeout=1.0)
    rig.ari.gone.add(CHANNEL)  # the caller hung up before we asked anything
    await rig.start()
    await rig.ari.send(stasis_start("forwarded"))

    await deleted(rig)
    [row] = await rig.rows()
    assert row["linkedid"] == CHANNEL, "without CHANNEL(linkedid) the channel id keys the call"
    assert row["forwarded_from"] is None
    assert row["outcome"] == "no-answer"
    assert not rig.ari.calls_to("POST", "/play")
    assert not messages(caplog, "task failed")
    assert rig.alive and len(rig.ari.sockets) == 1

    # The next call goes through as usual.
    await rig.ari.send(stasis_start("after-dial", "NOANSWER", channel="1760001000.9"))
    await deleted(rig, "1760001000.9")
    assert len(await rig.rows()) == 2


# -- bad input ----------------------------------------------------------------------------

GARBAGE: list[str | bytes] = [
    "not json at all",
    "",
    "[]",
    "null",
    "42",
    '"StasisStart"',
    "{}",
    '{"type": 5}',
    '{"type": ["StasisStart"]}',
    '{"type": "Dial", "channel": "whatever"}',
    '{"type": "StasisStart"}',
    '{"type": "StasisStart", "channel": {"name": "PJSIP/carrier-1"}}',
    '{"type": "PlaybackFinished", "playback": {}}',
    '{"type": "StasisEnd", "channel": {}}',
    '{"type": "StasisStart", "channel": {"id": "x"',
    "\udcff",
    b"\x00\xff\xfe binary frame",
    "x" * 200_000,
]


async def test_garbage_messages_are_ignored(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    await rig.start()
    for message in GARBAGE:
        if isinstance(message, str) and "\udcff" in message:
            await rig.ari.live.send_bytes(b"\xff\xfe")  # a text frame would need valid UTF-8
            continue
        await rig.ari.send(message)
    await rig.ari.send(stasis_start("forwarded"))

    await deleted(rig)
    [row] = await rig.rows()
    assert row["linkedid"] == LINKEDID
    assert len(rig.recorder.reports) == 1
    assert messages(caplog, "ignored an undecodable event")
    assert not messages(caplog, "task failed")
    assert rig.alive and len(rig.ari.sockets) == 1


@pytest.mark.parametrize(
    "message",
    [
        '{"type": "PlaybackFinished", "playback": "pb-1"}',
        '{"type": "StasisEnd", "channel": null}',
        '{"type": "ChannelDestroyed", "channel": ["1760001000.7"]}',
    ],
)
async def test_malformed_object_fields_do_not_kill_the_app(
    make_rig: Callable[..., Rig], message: str
) -> None:
    rig = make_rig()
    await rig.start()
    await rig.ari.send(message)
    await rig.ari.send(stasis_start("forwarded"))
    await asyncio.sleep(0.2)
    task = rig.task
    assert task is not None
    if task.done():
        rig.task = None  # nothing left for the teardown to stop
        task.result()  # raises what killed run()
    await deleted(rig)
    assert len(await rig.rows()) == 1


# -- the connection -----------------------------------------------------------------------


async def test_wrong_password_is_logged_and_retried(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "callcatch")
    rig = make_rig(password="not-the-password")
    await rig.start(wait_connected=False)

    await until(lambda: len(rig.ari.refused) >= 2, 2.0, "a second attempt")
    assert [status for _, status in rig.ari.refused][:2] == [401, 401]
    errors = [r for r in messages(caplog, "HTTP 401") if r.levelno == logging.ERROR]
    assert errors, caplog.text
    assert "not-the-password" not in caplog.text
    assert rig.alive
    assert not rig.app.connected.is_set()

    rig.ari.password = "not-the-password"  # the installer fixes ari.conf instead
    await asyncio.wait_for(rig.app.connected.wait(), 2.5)
    assert len(rig.ari.sockets) == 1


async def test_wrong_application_name_is_refused_and_retried(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig(app="someone-else")
    await rig.start(wait_connected=False)

    await until(lambda: len(rig.ari.refused) >= 2, 2.0, "a second attempt")
    assert {status for _, status in rig.ari.refused} == {400}
    warnings = [r for r in messages(caplog, "HTTP 400") if r.levelno == logging.WARNING]
    assert warnings, caplog.text
    assert rig.alive and not rig.ari.sockets


async def test_dropped_socket_is_reconnected(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig()
    await rig.start()
    dropped_at = time.monotonic()
    await rig.ari.live.close()

    await until(lambda: len(rig.ari.sockets) >= 2, 2.0, "a second socket")
    assert rig.ari.socket_times[1] - dropped_at < 1.0
    await asyncio.wait_for(rig.app.connected.wait(), 1)
    await rig.ari.send(stasis_start("after-dial", "NOANSWER"))
    await deleted(rig)
    [row] = await rig.rows()
    assert row["outcome"] == "no-answer"


async def test_peer_that_stops_answering_pings_is_noticed(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    rig = make_rig()
    rig.ari.hold_sockets = True
    await rig.start()
    rig.ari.hold_sockets = False  # only the first socket hangs

    bound = PING + PING / 2 + FIRST_BACKOFF + 0.4
    await until(lambda: len(rig.ari.sockets) >= 2, bound + 1, "a second socket")
    gap = rig.ari.socket_times[1] - rig.ari.socket_times[0]
    assert PING <= gap < bound, gap
    assert messages(caplog, "ARI event socket closed")
    # The new socket answers pings: it stays the only one over several heartbeats.
    await asyncio.sleep(4 * PING)
    assert len(rig.ari.sockets) == 2
    assert rig.app.connected.is_set()
