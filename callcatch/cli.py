"""The ``callcatch`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from callcatch import config as configuration
from callcatch.numbers import classify
from callcatch.store import Store, StoreError, texts

T = TypeVar("T")

EXIT_CONFIG = 2
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help=(
            f"configuration file (default: ${configuration.ENV_PATH}, "
            f"else {configuration.DEFAULT_PATH})"
        ),
    )
    parser = argparse.ArgumentParser(
        prog="callcatch", description="Catch missed calls on Asterisk and text the caller back."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run the daemon")
    commands.add_parser(
        "check-config", parents=[common], help="validate the configuration and print it"
    )
    calls = commands.add_parser(
        "calls", parents=[common], help="list recorded calls, newest first"
    )
    calls.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    calls.add_argument(
        "--since", metavar="WHEN", help="only calls since WHEN: 2h, 30m, 7d, or an ISO date/time"
    )
    calls.add_argument("--limit", type=int, default=None, metavar="N", help="at most N calls")
    outbox = commands.add_parser("outbox", parents=[common], help="list texts and their states")
    outbox.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    outbox.add_argument("--state", choices=["queued", "sending", "sent", "delivered", "failed"])
    outbox.add_argument("--limit", type=int, default=50, metavar="N", help="at most N texts")
    test = commands.add_parser(
        "send-test", parents=[common], help="send one test text through the running daemon's modem"
    )
    test.add_argument("number", help="where to send it, e.g. +12125550123")
    test.add_argument("--text", default=None, help="the text (default: a short test message)")
    test.add_argument(
        "--wait", type=float, default=60.0, metavar="SECONDS", help="how long to follow it"
    )
    demo = commands.add_parser(
        "demo", help="the whole product in one process: a missed call, then you are the caller"
    )
    demo.add_argument("--config", metavar="FILE", help="a shop's profile (default: the demo one)")
    demo.add_argument("--script", metavar="FILE", help="the caller's messages, one per line")
    demo.add_argument("--json", action="store_true", help="print the outcome as JSON")
    demo.add_argument("--data", default="data/demo", metavar="DIR", help="where the store goes")
    demo.add_argument(
        "--model", metavar="FILE", default=None,
        help="GGUF model (default: the profile's, else models/SmolLM2-135M-Instruct.Q4_1.gguf)",
    )  # fmt: skip
    conversations = commands.add_parser(
        "conversations", parents=[common], help="conversations with their state and slots"
    )
    conversations.add_argument("--json", action="store_true")
    bookings = commands.add_parser("bookings", parents=[common], help="list bookings")
    bookings.add_argument("--json", action="store_true")
    bookings.add_argument("--ics", action="store_true", help="print an iCalendar file")
    for name, what in (("takeover", "the owner answers"), ("release", "the assistant answers")):
        hold = commands.add_parser(name, parents=[common], help=f"{what} NUMBER from now on")
        hold.add_argument("number")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    try:
        config = configuration.load(configuration.resolve_path(args.config))
    except configuration.ConfigError as exc:
        print(f"callcatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.command == "check-config":
            return _check_config(config)
        if args.command == "calls":
            return _calls(config, args)
        if args.command == "outbox":
            return _outbox(config, args)
        if args.command == "send-test":
            return _send_test(config, args)
        if args.command == "conversations":
            return _conversations(config, args)
        if args.command == "bookings":
            return _bookings(config, args)
        if args.command in ("takeover", "release"):
            return _hold(config, args)
        _setup_logging(config.log.level)
        asyncio.run(_run(config))
        return 0
    except StoreError as exc:
        print(f"callcatch: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"callcatch: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _run(config: configuration.Config) -> None:
    from callcatch import daemon

    await daemon.run(config)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("panoramisk", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _check_config(config: configuration.Config) -> int:
    print(f"# {config.source}: valid")
    print(json.dumps(configuration.effective(config), indent=2))
    return 0


def parse_since(text: str, zone: ZoneInfo, now: datetime | None = None) -> datetime:
    """``2h``/``30m``/``7d`` ago, or an ISO 8601 date or time (in the shop's time zone
    when it names none)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip().lower())
    if match:
        amount, unit = float(match.group(1)), _UNITS[match.group(2)]
        try:
            return now - timedelta(**{unit: amount})
        except OverflowError as exc:
            raise UsageError(f"--since: {text!r} reaches too far back") from exc
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise UsageError(f"--since: expected 2h, 30m, 7d or an ISO date, got {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _calls(config: configuration.Config, args: argparse.Namespace) -> int:
    zone = ZoneInfo(config.business.timezone)
    since = parse_since(args.since, zone) if args.since else None
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit: expected a number of at least 1")
    rows = _with_store(config, lambda store: store.calls(since=since, limit=args.limit))
    if args.json:
        for row in rows:
            row["missed"] = bool(row["missed"])
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(rows, zone)
    return 0


def _print_table(rows: list[dict[str, Any]], zone: ZoneInfo) -> None:
    if not rows:
        print("no calls recorded")
        return
    header = (
        "started",
        "outcome",
        "caller",
        "DID",
        "forwarded from",
        "line",
        "detected",
        "text-back",
        "linkedid",
    )
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        started = datetime.fromisoformat(row["started_at"]).astimezone(zone)
        caller = row["caller_e164"] or f"({row['caller_status']}) {row['caller_raw']}".strip()
        table.append(
            (
                started.strftime("%Y-%m-%d %H:%M:%S"),
                row["outcome"],
                caller,
                row["did"] or "-",
                row["forwarded_from"] or "-",
                row["line"],
                row["detected_by"],
                _textback(row),
                row["linkedid"],
            )
        )
    _print_rows(table)


def _textback(row: dict[str, Any]) -> str:
    if not row["missed"]:
        return "-"
    state = row.get("textback_state") or row.get("textback") or "undecided"
    if row.get("textback") == "skipped":
        return f"skipped: {row['textback_reason']}"
    return str(state)


def _outbox(config: configuration.Config, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit: expected a number of at least 1")
    rows = _with_store(config, lambda s: texts.outbox(s, state=args.state, limit=args.limit))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("the outbox is empty")
        return 0
    zone = ZoneInfo(config.business.timezone)
    header = ("id", "created", "kind", "to", "state", "modem", "parts", "reason", "text")
    table: list[tuple[str, ...]] = [header]
    for row in rows:
        created = datetime.fromisoformat(row["created_at"]).astimezone(zone)
        body = row["body"] if len(row["body"]) <= 40 else row["body"][:39] + "…"
        table.append(
            (
                str(row["id"]),
                created.strftime("%Y-%m-%d %H:%M:%S"),
                row["kind"],
                row["number"],
                row["state"],
                row["modem"] or "-",
                str(row["parts"] or "-"),
                row["reason"] or "-",
                body.replace("\n", " / "),
            )
        )
    _print_rows(table)
    return 0


def _send_test(config: configuration.Config, args: argparse.Namespace) -> int:
    """Queue one text in the outbox and follow it: the running daemon owns the modem."""
    caller = classify(args.number, config.business.country)
    if caller.e164 is None:
        raise UsageError(f"{args.number!r} is not a number a text can go to ({caller.reason})")
    body = args.text or f"Test text from callcatch for {config.business.name}."
    store = Store(config.store.path, config.business.country)
    try:
        now = texts.now_utc()
        text_id = texts.queue(
            store,
            kind=texts.TEST,
            number=caller.e164,
            body=body,
            now=now,
            expires_at=now + timedelta(seconds=max(args.wait, 1.0)),
        )
        print(f"outbox {text_id}: queued for {caller.e164}")
        deadline = time.monotonic() + args.wait
        seen = "queued"
        while time.monotonic() < deadline:
            row = texts.text(store, int(text_id or 0))
            state = row["state"] if row else "missing"
            if state != seen:
                print(f"outbox {text_id}: {state} {row.get('reason', '') if row else ''}".rstrip())
                seen = state
            if state in ("sent", "delivered", "failed"):
                return 0 if state != "failed" else 1
            time.sleep(0.2)
        print(
            f"outbox {text_id}: still {seen} after {args.wait:.0f} s "
            "(is `callcatch run` running with a [[modem]]?)"
        )
        return 1
    finally:
        store.close()


def _demo(args: argparse.Namespace) -> int:
    from callcatch import demo

    try:
        return demo.main(args.config, args.script, args.json, args.data, args.model)
    except configuration.ConfigError as exc:
        print(f"callcatch: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"callcatch: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _conversations(config: configuration.Config, args: argparse.Namespace) -> int:
    from callcatch.store import conversations

    rows = _with_store(config, conversations.listing)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no conversations")
        return 0
    table: list[tuple[str, ...]] = [("id", "number", "state", "owner", "slots", "updated")]
    for row in rows:
        slots = ", ".join(
            f"{k}={v['text'] if isinstance(v, dict) else v}"
            for k, v in sorted(row["slots"].items())
        )
        table.append(
            (
                str(row["id"]),
                row["number"],
                row["state"],
                "owner" if row["owner_holds"] else "-",
                slots or "-",
                row["updated_at"][:16],
            )
        )
    _print_rows(table)
    return 0


def _bookings(config: configuration.Config, args: argparse.Namespace) -> int:
    from callcatch import booking

    rows = _with_store(config, booking.bookings)
    zone = ZoneInfo(config.business.timezone)
    if args.ics:
        print(booking.to_ics(rows, config.business.name, zone), end="")
        return 0
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no bookings")
        return 0
    table: list[tuple[str, ...]] = [
        ("id", "when", "state", "number", "name", "service", "address")
    ]
    for row in rows:
        starts = datetime.fromisoformat(str(row["starts_at"])).astimezone(zone)
        table.append(
            (
                str(row["id"]),
                starts.strftime("%a %d %b %H:%M"),
                str(row["state"]),
                str(row["number"]),
                str(row["name"] or "-"),
                str(row["service"] or "-"),
                str(row["address"] or "-"),
            )
        )
    _print_rows(table)
    return 0


def _hold(config: configuration.Config, args: argparse.Namespace) -> int:
    from callcatch.store import conversations

    number = classify(args.number, config.business.country).e164
    if number is None:
        raise UsageError(f"{args.number!r} is not a phone number")
    owner = args.command == "takeover"
    done = _with_store(config, lambda s: conversations.hold(s, number, owner, texts.now_utc()))
    if not done:
        print(f"no conversation with {number}")
        return 1
    who = "the owner answers" if owner else "the assistant answers"
    print(f"{number}: {who}")
    return 0


def _with_store(config: configuration.Config, job: Callable[[Store], T]) -> T:
    """``job`` on the configured store, opened for it and closed after."""
    store = Store(config.store.path, config.business.country)
    try:
        return job(store)
    finally:
        store.close()


def _print_rows(table: list[tuple[str, ...]]) -> None:
    table = [tuple(_printable(str(v)) for v in line) for line in table]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _printable(text: str) -> str:
    """Caller ids come from the network: keep control characters off the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


if __name__ == "__main__":
    sys.exit(main())
