"""A small Asterisk manager (AMI) server for fault tests, on 127.0.0.1 and a free port.

It speaks just enough of the protocol for :class:`callcatch.pbx.ami.AmiWatcher`: the banner,
``Login``, ``Ping``, ``CoreShowChannels`` and ``Getvar``, each answer echoing the ActionID.
Beyond that it does what a real Asterisk will not do on demand: push any bytes (events,
malformed frames), stop answering pings while keeping the socket open (a hung or half-open
peer), close connections, and stop and start again on the same port (a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
EOL = "\r\n"


def frame(headers: Mapping[str, object]) -> bytes:
    """One AMI frame: ``Key: value`` lines, then an empty line."""
    lines = [f"{key}: {value}" for key, value in headers.items()]
    return (EOL.join(lines) + EOL + EOL).encode("utf-8")


def parse(raw: bytes) -> dict[str, str]:
    """An action as the client wrote it (header names as sent)."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split(EOL):
        key, sep, value = line.partition(": ")
        if sep:
            headers[key] = value
    return headers


def header(action: Mapping[str, str], name: str) -> str:
    """A header of ``action`` looked up without regard to case, as Asterisk does."""
    for key, value in action.items():
        if key.lower() == name.lower():
            return value
    return ""


@dataclass
class Connection:
    """One client connection, as the server sees it."""

    number: int
    writer: asyncio.StreamWriter
    opened_at: float
    answer_pings: bool = True
    closed_at: float | None = None
    closed_by_client: bool = False
    actions: list[dict[str, str]] = field(default_factory=list)
    # Held while a reply or a push is written, so that no frame lands inside another.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def open(self) -> bool:
        return self.closed_at is None


class FakeAmi:
    """The fake manager. ``start()`` binds a free port the first time and the same port on
    every later start; times are ``time.monotonic()``."""

    def __init__(self, username: str = "callcatch", secret: str = "s3cret") -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.username = username
        self.secret = secret
        self.login_ok = True
        # New connections answer pings when this is true; see also :meth:`hang`.
        self.answer_pings = True
        # Close the connection, without a reply, when an action of this name arrives.
        self.close_on_action: str | None = None
        # CoreShowChannel entries for the next resyncs (Event and ActionID are added).
        self.channels: list[dict[str, str]] = []
        # Getvar answers by variable name; a missing name answers an empty value.
        self.variables: dict[str, str] = {}
        # Raw bytes to write just before answering an action of this (lower-case) name.
        self.before_reply: dict[str, bytes] = {}
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection (as a stopping Asterisk does)."""
        if self._server is not None:
            self._server.close()
        await self.close_all()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    @property
    def live(self) -> list[Connection]:
        return [c for c in self.connections if c.open]

    @property
    def times(self) -> list[float]:
        """When each connection was accepted."""
        return [c.opened_at for c in self.connections]

    def actions(self, name: str) -> list[dict[str, str]]:
        """Every action of this name received, on any connection, in order."""
        wanted = name.lower()
        return [
            a for c in self.connections for a in c.actions if header(a, "Action").lower() == wanted
        ]

    # -- faults -----------------------------------------------------------------------

    def hang(self) -> None:
        """The open connections stop answering pings; their sockets stay open."""
        for conn in self.live:
            conn.answer_pings = False

    async def push(self, data: bytes) -> None:
        """Write raw bytes to every open connection."""
        await self.push_split([data])

    async def push_split(self, pieces: list[bytes], pause: float = 0.01) -> None:
        """Write ``pieces`` a little apart, so that the client reads them separately; no
        reply is written between them."""
        for conn in self.live:
            async with conn.lock:
                for number, piece in enumerate(pieces):
                    if number:
                        await asyncio.sleep(pause)
                    conn.writer.write(piece)
                    with contextlib.suppress(ConnectionError):
                        await conn.writer.drain()

    async def event(self, name: str, **headers: object) -> None:
        await self.push(frame({"Event": name, **headers}))

    async def close_all(self) -> None:
        for conn in self.live:
            await self._close(conn)

    # -- waiting ----------------------------------------------------------------------

    async def wait_for(self, predicate: object, within: float) -> None:
        """Until ``predicate()`` is true; AssertionError after ``within`` seconds."""
        assert callable(predicate)

        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        try:
            await asyncio.wait_for(until(), within)
        except TimeoutError:
            raise AssertionError(
                f"fake AMI: condition not met in {within} s; "
                f"connections at {self.times}, actions "
                f"{[header(a, 'Action') for c in self.connections for a in c.actions]}"
            ) from None

    async def wait_for_connections(self, count: int, within: float) -> Connection:
        await self.wait_for(lambda: len(self.connections) >= count, within)
        return self.connections[count - 1]

    async def wait_for_action(self, name: str, count: int = 1, within: float = 2.0) -> None:
        await self.wait_for(lambda: len(self.actions(name)) >= count, within)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- protocol ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        conn = Connection(
            len(self.connections) + 1, writer, time.monotonic(), answer_pings=self.answer_pings
        )
        self.connections.append(conn)
        await self._notify()
        try:
            writer.write(BANNER)
            await writer.drain()
            while conn.open:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    if conn.open:
                        conn.closed_by_client = True
                    break
                action = parse(raw)
                conn.actions.append(action)
                async with conn.lock:
                    await self._answer(conn, action)
                await self._notify()
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            await self._close(conn)
            self._handlers.discard(task)

    async def _close(self, conn: Connection) -> None:
        if conn.closed_at is None:
            conn.closed_at = time.monotonic()
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
            await self._notify()

    async def _answer(self, conn: Connection, action: dict[str, str]) -> None:
        name = header(action, "Action").lower()
        if self.close_on_action is not None and name == self.close_on_action.lower():
            await self._close(conn)
            return
        if name in self.before_reply:
            conn.writer.write(self.before_reply[name])
        reply = {"Response": "Success", "ActionID": header(action, "ActionID")}
        if name == "login":
            if header(action, "Username") == self.username and (
                header(action, "Secret") == self.secret and self.login_ok
            ):
                conn.writer.write(frame({**reply, "Message": "Authentication accepted"}))
                conn.writer.write(frame({"Event": "FullyBooted", "Status": "Fully Booted"}))
            else:
                reply["Response"] = "Error"
                conn.writer.write(frame({**reply, "Message": "Authentication failed"}))
                await conn.writer.drain()
                # Asterisk ends the session after a failed login.
                await self._close(conn)
                return
        elif name == "ping":
            if not conn.answer_pings:
                return
            conn.writer.write(frame({**reply, "Ping": "Pong", "Timestamp": f"{time.time():.6f}"}))
        elif name == "coreshowchannels":
            actionid = reply["ActionID"]
            items = [
                {"Event": "CoreShowChannel", "ActionID": actionid, **channel}
                for channel in self.channels
            ]
            out = [frame({**reply, "EventList": "start", "Message": "Channels will follow"})]
            out += [frame(item) for item in items]
            complete = {
                "Event": "CoreShowChannelsComplete",
                "ActionID": actionid,
                "EventList": "Complete",
                "ListItems": len(items),
            }
            out.append(frame(complete))
            conn.writer.write(b"".join(out))
        elif name == "getvar":
            variable = header(action, "Variable")
            value = self.variables.get(variable, "")
            conn.writer.write(frame({**reply, "Variable": variable, "Value": value}))
        elif name == "logoff":
            conn.writer.write(frame({"Response": "Goodbye", "ActionID": reply["ActionID"]}))
        else:
            reply["Response"] = "Error"
            conn.writer.write(frame({**reply, "Message": "Invalid/unknown command"}))
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()
