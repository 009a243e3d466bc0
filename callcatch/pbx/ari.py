"""The Stasis application: every channel that enters it is a missed call.

Two dialplans send calls here (see ``asterisk-conf/extensions_callcatch.conf``):

* ``Stasis(callcatch,forwarded)``: a DID that the owner's mobile or landline forwards
  unanswered calls to. The forwarding number and reason come from ``REDIRECTING()``, which
  PJSIP fills from the carrier's Diversion or History-Info header.
* ``Stasis(callcatch,after-dial,${DIALSTATUS})``: the shop's phones rang and nobody took it.

The call is committed first, then the configured greeting (if any) plays, then the channel
is hung up. When this application is not connected, Stasis() fails at once and the shipped
dialplan raises the ``CallcatchMissed`` user event instead, which the AMI watcher records.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from callcatch.calls import CallRecord, Detection, outcome_of_dial, outcome_of_redirect
from callcatch.config import AriConfig
from callcatch.pbx.rules import device_of
from callcatch.recorder import Recorder
from callcatch.tasks import Backoff, TaskSet, sleep_unless

log = logging.getLogger(__name__)

_REST_TIMEOUT = aiohttp.ClientTimeout(total=5)


class AriApp:
    def __init__(self, config: AriConfig, recorder: Recorder, ping_interval: float = 5.0) -> None:
        self.config = config
        self.recorder = recorder
        self.ping_interval = ping_interval
        self.connected = asyncio.Event()
        self.tasks = TaskSet("ARI", log)
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._http: aiohttp.ClientSession | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = Backoff()
        credentials = f"{self.config.username}:{self.config.password.value}".encode()
        headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}
        async with aiohttp.ClientSession(headers=headers, timeout=_REST_TIMEOUT) as http:
            self._http = http
            while not stopping.is_set():
                try:
                    await self._session(http, stopping, backoff)
                except aiohttp.WSServerHandshakeError as exc:
                    level = logging.ERROR if exc.status in (401, 403) else logging.WARNING
                    log.log(
                        level,
                        "ARI %s refused the event socket: HTTP %s",
                        self.config.url,
                        exc.status,
                    )
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.warning("ARI %s unreachable: %s", self.config.url, exc or "timeout")
                finally:
                    self.connected.clear()
                if stopping.is_set():
                    break
                delay = backoff.next_delay()
                log.info("ARI reconnecting in %.1f s", delay)
                if await sleep_unless(stopping, delay):
                    break
            await self.drain()
            self._http = None

    async def drain(self) -> None:
        await self.tasks.drain()

    async def _session(
        self, http: aiohttp.ClientSession, stopping: asyncio.Event, backoff: Backoff
    ) -> None:
        url = self.config.url.replace("http", "ws", 1) + "/ari/events"
        params = {"app": self.config.app, "subscribeAll": "false"}
        async with http.ws_connect(
            url,
            params=params,
            heartbeat=self.ping_interval,
            timeout=aiohttp.ClientWSTimeout(ws_close=2),
        ) as ws:
            backoff.reset()
            self.connected.set()
            log.info("ARI connected to %s as application %s", self.config.url, self.config.app)
            stop = asyncio.ensure_future(stopping.wait())
            try:
                while True:
                    receive = asyncio.ensure_future(ws.receive())
                    done, _ = await asyncio.wait({receive, stop}, return_when="FIRST_COMPLETED")
                    if stop in done:
                        receive.cancel()
                        return
                    message = receive.result()
                    if message.type == aiohttp.WSMsgType.TEXT:
                        self._dispatch(message.data)
                    elif message.type in (
                        aiohttp.WSMsgType.ERROR,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSE,
                    ):
                        log.warning("ARI event socket closed")
                        return
            finally:
                stop.cancel()

    def _dispatch(self, data: str) -> None:
        try:
            event = json.loads(data)
            kind = event["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("ARI: ignored an undecodable event (%d bytes)", len(data))
            return
        if not isinstance(event, dict):
            log.warning("ARI: ignored an event that is not an object")
            return
        if kind == "StasisStart":
            self.tasks.spawn(self._missed(event))
        elif kind == "PlaybackFinished":
            self._wake(_field(event, "playback", "id"))
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            self._wake(_field(event, "channel", "id"))

    async def _missed(self, event: dict[str, Any]) -> None:
        channel = _object(event, "channel")
        channel_id = str(channel.get("id", ""))
        if not channel_id:
            log.warning("ARI: StasisStart without a channel id ignored")
            return
        raw_args = event.get("args")
        args = [str(a) for a in raw_args] if isinstance(raw_args, list) else []
        mode = args[0] if args else "forwarded"
        linkedid, from_num, reason = await asyncio.gather(
            self._variable(channel_id, "CHANNEL(linkedid)"),
            self._variable(channel_id, "REDIRECTING(from-num)"),
            self._variable(channel_id, "REDIRECTING(reason)"),
        )
        if mode == "after-dial":
            outcome = outcome_of_dial(args[1] if len(args) > 1 else None)
        else:
            outcome = outcome_of_redirect(reason)
        caller = _object(channel, "caller")
        dialplan = _object(channel, "dialplan")
        now = datetime.now(UTC)
        call = CallRecord(
            linkedid=linkedid or channel_id,
            caller=str(caller.get("number", "")),
            caller_name=str(caller.get("name", "")),
            did=str(dialplan.get("exten", "")) or None,
            forwarded_from=from_num or None,
            line=device_of(str(channel.get("name", ""))) or "unknown",
            started_at=_parse_time(channel.get("creationtime")) or now,
            ended_at=now,
            outcome=outcome,
            detected_by=Detection.ARI,
            signal=f"stasis-{mode}",
        )
        await self.recorder.record(call)
        if self.config.greeting:
            await self._greet(channel_id, call.linkedid)
        await self._rest("DELETE", f"/channels/{channel_id}", quiet=True)

    async def _greet(self, channel_id: str, linkedid: str) -> None:
        if await self._rest("POST", f"/channels/{channel_id}/answer") is None:
            return
        playback = await self._rest(
            "POST",
            f"/channels/{channel_id}/play",
            params={"media": f"sound:{self.config.greeting}"},
        )
        if not isinstance(playback, dict) or "id" not in playback:
            return
        done = asyncio.get_running_loop().create_future()
        for key in (str(playback["id"]), channel_id):
            self._waiters[key] = done
        try:
            await asyncio.wait_for(done, self.config.greeting_timeout)
        except TimeoutError:
            log.warning(
                "call %s: greeting did not finish in %.0f s",
                linkedid,
                self.config.greeting_timeout,
            )
        finally:
            for key in (str(playback["id"]), channel_id):
                self._waiters.pop(key, None)

    def _wake(self, key: str) -> None:
        future = self._waiters.get(key)
        if future is not None and not future.done():
            future.set_result(None)

    async def _variable(self, channel_id: str, name: str) -> str:
        reply = await self._rest(
            "GET", f"/channels/{channel_id}/variable", params={"variable": name}, quiet=True
        )
        if isinstance(reply, dict):
            return str(reply.get("value") or "")
        return ""

    async def _rest(
        self, method: str, path: str, params: dict[str, str] | None = None, quiet: bool = False
    ) -> Any:
        """One ARI request; None when it failed (logged unless ``quiet``)."""
        if self._http is None:
            return None
        url = f"{self.config.url}/ari{path}"
        try:
            async with self._http.request(method, url, params=params) as response:
                if response.status >= 400:
                    if not quiet:
                        log.warning("ARI %s %s: HTTP %s", method, path, response.status)
                    return None
                if response.content_type == "application/json":
                    return await response.json()
                return {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            if not quiet:
                log.warning("ARI %s %s failed: %s", method, path, exc or "timeout")
            return None


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, dict) else {}


def _field(event: dict[str, Any], key: str, name: str) -> str:
    return str(_object(event, key).get(name, ""))


def _parse_time(value: object) -> datetime | None:
    """ARI times look like ``2026-12-03T12:00:00.123+0000``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None
