"""The ``callcatch`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from callcatch import config as configuration
from callcatch.store import Store, StoreError

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    store = Store(config.store.path, config.business.country)
    try:
        rows = store.calls(since=since, limit=args.limit)
    finally:
        store.close()
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
                row["linkedid"],
            )
        )
    table = [tuple(_printable(str(v)) for v in line) for line in table]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _printable(text: str) -> str:
    """Caller ids come from the network: keep control characters off the terminal."""
    return "".join(c if c.isprintable() else "?" for c in text)


if __name__ == "__main__":
    sys.exit(main())
