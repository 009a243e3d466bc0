"""The installer's configuration: one TOML file, typed and validated at load.

Every problem is reported as a :class:`ConfigError` naming the file and the dotted key,
so that ``callcatch`` can print one line and exit with status 2. Secrets (the AMI secret
and the ARI password) may live in the file, in a separate file (``secret_file``), or in
the environment; the environment wins, then the file, then the inline value.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date, time
from pathlib import Path
from string import Formatter
from typing import Any

import phonenumbers

DEFAULT_PATH = Path("/etc/callcatch/callcatch.toml")
ENV_PATH = "CALLCATCH_CONFIG"
ENV_AMI_SECRET = "CALLCATCH_AMI_SECRET"
ENV_ARI_PASSWORD = "CALLCATCH_ARI_PASSWORD"
ENV_MODEM_PIN = "CALLCATCH_MODEM_PIN"
MASK = "********"


class ConfigError(Exception):
    """A configuration problem, located by file and key."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Secret:
    """A secret value that never shows itself in a repr, a log line or a printout."""

    value: str = field(repr=False)
    source: str = "file"

    def __str__(self) -> str:
        return MASK


@dataclass(frozen=True)
class BusinessConfig:
    name: str
    country: str
    timezone: str
    phone: str = ""


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class HoursConfig:
    """Opening hours per weekday (Monday first; empty: closed) and closed dates."""

    week: tuple[tuple[tuple[time, time], ...], ...]
    holidays: frozenset[date]


@dataclass(frozen=True)
class TextbackConfig:
    enabled: bool
    delay_seconds: float
    expiry_minutes: float
    repeat_window_hours: float
    max_parts: int
    max_attempts: int
    retry_seconds: float
    per_number_per_day: int
    per_hour: int
    open_template: str
    after_hours_template: str
    closed_template: str
    opt_out_line: str


@dataclass(frozen=True)
class ScreeningConfig:
    allowed_countries: frozenset[str]
    never_text: frozenset[str]
    block_fixed_line: bool


@dataclass(frozen=True)
class OwnerConfig:
    numbers: tuple[str, ...]
    notify: bool
    batch_seconds: float
    daily_digest: time | None  # local time of the day's summary text; None: no digest


@dataclass(frozen=True)
class KeywordsConfig:
    stop_words: frozenset[str]
    start_words: frozenset[str]
    help_words: frozenset[str]
    stop_reply: str
    start_reply: str
    help_reply: str
    loop_guard_per_minute: int


@dataclass(frozen=True)
class StoreConfig:
    path: Path


@dataclass(frozen=True)
class AmiConfig:
    host: str
    port: int
    username: str
    secret: Secret
    ping_interval: float
    pong_timeout: float
    connect_timeout: float


@dataclass(frozen=True)
class AriConfig:
    enabled: bool
    url: str
    username: str
    password: Secret
    app: str
    greeting: str
    greeting_timeout: float


@dataclass(frozen=True)
class LinesConfig:
    trunks: tuple[str, ...]
    analog: tuple[str, ...]


@dataclass(frozen=True)
class CdrConfig:
    csv_path: Path | None
    sqlite_path: Path | None
    lookback_hours: float
    timezone: str
    forwarded_contexts: tuple[str, ...]


@dataclass(frozen=True)
class ModemConfig:
    """One GSM modem. Several may serve one shop; each sends one message at a time."""

    name: str
    port: Path
    baud: int
    pin: Secret | None
    smsc: str
    pace_seconds: float
    command_timeout: float
    send_timeout: float
    health_interval: float


@dataclass(frozen=True)
class ServiceConfig:
    """One entry of the shop's service catalogue; ``keywords`` are how callers say it."""

    name: str
    keywords: tuple[str, ...]
    emergency: bool


@dataclass(frozen=True)
class AreaConfig:
    """Where the shop works: town or neighbourhood names, and postal code prefixes."""

    places: tuple[str, ...]
    postcode_prefixes: tuple[str, ...]


@dataclass(frozen=True)
class EmergencyConfig:
    keywords: tuple[str, ...]
    gas_keywords: tuple[str, ...]
    gas_advice: str
    reply: str


@dataclass(frozen=True)
class BookingConfig:
    slot_minutes: int
    jobs_per_slot: int
    days_ahead: int
    offer: int


@dataclass(frozen=True)
class ConversationConfig:
    enabled: bool
    model_path: Path | None
    context_size: int
    threads: int
    reply_timeout: float
    stall_minutes: float


@dataclass(frozen=True)
class LogConfig:
    level: str
    show_numbers: bool


@dataclass(frozen=True)
class Config:
    source: Path
    business: BusinessConfig
    store: StoreConfig
    ami: AmiConfig
    ari: AriConfig
    lines: LinesConfig
    cdr: CdrConfig
    log: LogConfig
    modems: tuple[ModemConfig, ...]
    hours: HoursConfig
    textback: TextbackConfig
    screening: ScreeningConfig
    owner: OwnerConfig
    keywords: KeywordsConfig
    services: tuple[ServiceConfig, ...]
    area: AreaConfig
    emergency: EmergencyConfig
    booking: BookingConfig
    conversation: ConversationConfig


class _Section:
    """Typed reads from one TOML table; every error names file and dotted key."""

    def __init__(self, file: Path, prefix: str, data: Mapping[str, Any]) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data
        self.read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def _get(self, name: str, default: Any) -> Any:
        self.read.add(name)
        if name not in self.data:
            if default is _REQUIRED:
                raise self.error(name, "is required")
            return default
        return self.data[name]

    def text(self, name: str, default: Any = None, *, allow_empty: bool = True) -> str:
        value = self._get(name, default)
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {_shown(value)}")
        if not allow_empty and not value.strip():
            raise self.error(name, "must not be empty")
        return value

    def number(
        self, name: str, default: Any, *, low: float, high: float, integer: bool = False
    ) -> float:
        value = self._get(name, default)
        wanted = "a whole number" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(
                name, f"expected {wanted} from {low:g} to {high:g}, got {_shown(value)}"
            )
        if integer and not isinstance(value, int):
            raise self.error(name, f"expected {wanted} from {low:g} to {high:g}, got {value!r}")
        if not low <= value <= high:
            raise self.error(name, f"expected {wanted} from {low:g} to {high:g}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"expected true or false, got {_shown(value)}")
        return value

    def texts(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.error(name, f"expected a list of non-empty strings, got {_shown(value)}")
        return tuple(value)

    def path(self, name: str, default: Any = None) -> Path | None:
        value = self._get(name, default)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(name, f"expected a file path, got {_shown(value)}")
        try:
            path = Path(value).expanduser()
        except RuntimeError as exc:
            raise self.error(name, f"cannot expand ~ in {value!r}") from exc
        if not path.is_absolute():
            path = (self.file.parent / path).resolve()
        return path

    def secret(self, name: str, env: str) -> Secret:
        """A secret from the environment, else ``<name>_file``, else the inline value."""
        self.read.update({name, f"{name}_file"})
        from_env = os.environ.get(env)
        if from_env:
            return Secret(from_env, f"environment {env}")
        file_name = f"{name}_file"
        if file_name in self.data:
            path = self.path(file_name)
            if path is None:
                raise self.error(file_name, "expected a file path")
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self.error(file_name, f"cannot read {path}: {exc.strerror}") from exc
            except UnicodeDecodeError as exc:
                raise self.error(file_name, f"{path} is not UTF-8 text") from exc
            if not value:
                raise self.error(file_name, f"{path} is empty")
            return Secret(value, f"file {path}")
        if name in self.data:
            value = self.data[name]
            # Never echo a secret back, not even a mistyped one.
            if not isinstance(value, str) or not value.strip():
                raise self.error(name, "expected a non-empty string (value not shown)")
            return Secret(value, "config file")
        raise self.error(name, f"is required (or {file_name}, or the environment variable {env})")

    def table(self, name: str) -> _Section:
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table [{self.key(name)}], got {_shown(value)}")
        return _Section(self.file, self.key(name), value)

    def reject_unknown(self) -> None:
        for name in self.data:
            if name not in self.read:
                raise self.error(name, "is not a known setting (misspelt?)")


_REQUIRED = object()


def _shown(value: Any) -> str:
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), f"a {type(value).__name__}"
    )
    if isinstance(value, dict):
        kind = "a table"
    elif isinstance(value, list):
        kind = "a list"
    return kind if isinstance(value, dict | list) else f"{kind} ({value!r})"


def resolve_path(cli_path: str | None) -> Path:
    """The config file to read: ``--config``, else ``$CALLCATCH_CONFIG``, else the default."""
    if cli_path:
        return Path(cli_path)
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    return DEFAULT_PATH


def load(path: Path) -> Config:
    """Read and validate the configuration file at ``path``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(
            path, "", "no such file (pass --config or set CALLCATCH_CONFIG)"
        ) from exc
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", "is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"is not valid TOML: {exc}") from exc
    return parse(data, path)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    top = _Section(path, "", data)
    business = _business(top.table("business"))
    config = Config(
        source=path,
        business=business,
        store=_store(top.table("store")),
        ami=_ami(top.table("ami")),
        ari=_ari(top.table("ari")),
        lines=_lines(top.table("lines")),
        cdr=_cdr(top.table("cdr")),
        log=_log(top.table("log")),
        modems=_modems(top),
        hours=_hours(top.table("hours")),
        textback=_textback(top.table("textback")),
        screening=_screening(top.table("screening"), business),
        owner=_owner(top.table("owner"), business),
        keywords=_keywords(top.table("keywords")),
        services=_services(top),
        area=_area(top.table("area")),
        emergency=_emergency(top.table("emergency")),
        booking=_booking(top.table("booking")),
        conversation=_conversation(top.table("conversation")),
    )
    top.reject_unknown()
    return config


def _business(s: _Section) -> BusinessConfig:
    country = s.text("country", _REQUIRED, allow_empty=False).upper()
    if country not in phonenumbers.SUPPORTED_REGIONS:
        raise s.error(
            "country", f"expected a two-letter country code such as US or GB, got {country!r}"
        )
    timezone = s.text("timezone", _REQUIRED, allow_empty=False)
    _check_timezone(s, "timezone", timezone)
    config = BusinessConfig(
        name=s.text("name", _REQUIRED, allow_empty=False),
        country=country,
        timezone=timezone,
        phone=s.text("phone", ""),
    )
    s.reject_unknown()
    return config


def _check_timezone(s: _Section, name: str, value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise s.error(
            name, f"expected an IANA time zone such as Europe/London, got {value!r}"
        ) from exc


def _store(s: _Section) -> StoreConfig:
    path = s.path("path", "/var/lib/callcatch/callcatch.db")
    if path is None:
        raise s.error("path", "must not be empty")
    s.reject_unknown()
    return StoreConfig(path=path)


def _ami(s: _Section) -> AmiConfig:
    config = AmiConfig(
        host=s.text("host", "127.0.0.1", allow_empty=False),
        port=int(s.number("port", 5038, low=1, high=65535, integer=True)),
        username=s.text("username", "callcatch", allow_empty=False),
        secret=s.secret("secret", ENV_AMI_SECRET),
        ping_interval=s.number("ping_interval", 5.0, low=0.2, high=300),
        pong_timeout=s.number("pong_timeout", 3.0, low=0.1, high=60),
        connect_timeout=s.number("connect_timeout", 5.0, low=0.1, high=60),
    )
    s.reject_unknown()
    return config


def _ari(s: _Section) -> AriConfig:
    enabled = s.flag("enabled", True)
    url = s.text("url", "http://127.0.0.1:8088", allow_empty=False).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise s.error("url", f"expected an http:// or https:// address, got {url!r}")
    if enabled:
        password = s.secret("password", ENV_ARI_PASSWORD)
    else:
        s.read.update({"password", "password_file"})
        password = Secret("", "unused")
    config = AriConfig(
        enabled=enabled,
        url=url,
        username=s.text("username", "callcatch", allow_empty=False),
        password=password,
        app=s.text("app", "callcatch", allow_empty=False),
        greeting=s.text("greeting", ""),
        greeting_timeout=s.number("greeting_timeout", 30.0, low=1, high=600),
    )
    s.reject_unknown()
    return config


def _lines(s: _Section) -> LinesConfig:
    trunks = s.texts("trunks")
    analog = s.texts("analog")
    for name, values in (("trunks", trunks), ("analog", analog)):
        for value in values:
            if "/" not in value:
                raise s.error(
                    name, f"expected channel names such as PJSIP/carrier or DAHDI/1, got {value!r}"
                )
    if not trunks and not analog:
        raise s.error("trunks", "name at least one inbound line (trunks or analog)")
    s.reject_unknown()
    return LinesConfig(trunks=trunks, analog=analog)


def _cdr(s: _Section) -> CdrConfig:
    timezone = s.text("timezone", "UTC", allow_empty=False)
    _check_timezone(s, "timezone", timezone)
    config = CdrConfig(
        csv_path=s.path("csv_path", "/var/log/asterisk/cdr-csv/Master.csv"),
        sqlite_path=s.path("sqlite_path", None),
        lookback_hours=s.number("lookback_hours", 24.0, low=0, high=24 * 31),
        timezone=timezone,
        forwarded_contexts=s.texts("forwarded_contexts", ("callcatch-forwarded",)),
    )
    s.reject_unknown()
    return config


def _modems(top: _Section) -> tuple[ModemConfig, ...]:
    top.read.add("modem")
    tables = top.data.get("modem", [])
    if isinstance(tables, dict):
        tables = [tables]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise top.error("modem", "expected one or more [[modem]] tables")
    modems = []
    for index, table in enumerate(tables):
        s = _Section(top.file, f"modem[{index}]", table)
        modems.append(_modem(s, index))
    names = [m.name for m in modems]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise top.error(f"modem[{index}].name", f"{name!r} names two modems")
    return tuple(modems)


def _modem(s: _Section, index: int) -> ModemConfig:
    port = s.path("port", _REQUIRED)
    if port is None:
        raise s.error("port", "expected the modem's serial device, e.g. /dev/ttyUSB2")
    has_pin = any(k in s.data for k in ("pin", "pin_file")) or bool(os.environ.get(ENV_MODEM_PIN))
    pin = s.secret("pin", ENV_MODEM_PIN) if has_pin else None
    s.read.update({"pin", "pin_file"})
    if pin is not None and not (pin.value.isdigit() and 4 <= len(pin.value) <= 8):
        raise s.error("pin", "expected the SIM PIN: 4 to 8 digits (value not shown)")
    smsc = s.text("smsc", "")
    if smsc and not _SMSC.match(smsc):
        raise s.error("smsc", f"expected the SMSC number in international form, got {smsc!r}")
    config = ModemConfig(
        name=s.text("name", f"modem{index + 1}", allow_empty=False),
        port=port,
        baud=int(s.number("baud", 115200, low=1200, high=4_000_000, integer=True)),
        pin=pin,
        smsc=smsc,
        pace_seconds=s.number("pace_seconds", 3.0, low=0, high=3600),
        command_timeout=s.number("command_timeout", 10.0, low=0.5, high=300),
        send_timeout=s.number("send_timeout", 60.0, low=1, high=300),
        health_interval=s.number("health_interval", 60.0, low=1, high=86400),
    )
    s.reject_unknown()
    return config


_SMSC = re.compile(r"^\+[1-9][0-9]{4,15}$")


_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _hours(s: _Section) -> HoursConfig:
    week = []
    for day in WEEKDAYS:
        text = s.text(day, "").strip().lower()
        ranges: list[tuple[time, time]] = []
        if text not in ("", "closed"):
            for part in text.split(","):
                match = _RANGE.match(part)
                try:
                    if not match:
                        raise ValueError(part)
                    h1, m1, h2, m2 = (int(g) for g in match.groups())
                    opens = time(h1, m1)
                    closes = time(23, 59, 59) if (h2, m2) == (24, 0) else time(h2, m2)
                except ValueError as exc:
                    raise s.error(
                        day, f'expected hours like "08:00-17:00" or "closed", got {part.strip()!r}'
                    ) from exc
                if closes <= opens:
                    raise s.error(day, f"closes before it opens: {part.strip()!r}")
                ranges.append((opens, closes))
        week.append(tuple(sorted(ranges)))
    holidays = set()
    for value in s.texts("holidays"):
        try:
            holidays.add(date.fromisoformat(value))
        except ValueError as exc:
            raise s.error("holidays", f"expected dates like 2026-12-25, got {value!r}") from exc
    s.reject_unknown()
    return HoursConfig(week=tuple(week), holidays=frozenset(holidays))


_PLACEHOLDERS = {"business", "phone", "next_open"}


def _template(s: _Section, name: str, default: str) -> str:
    text = s.text(name, default, allow_empty=False)
    try:
        fields = {f for _, f, _, _ in Formatter().parse(text) if f is not None}
    except ValueError as exc:
        raise s.error(name, f"is not a valid template: {exc}") from exc
    unknown = fields - _PLACEHOLDERS
    if unknown:
        raise s.error(
            name,
            f"unknown placeholder {{{sorted(unknown)[0]}}}; known: "
            + ", ".join(f"{{{p}}}" for p in sorted(_PLACEHOLDERS)),
        )
    return text


def _textback(s: _Section) -> TextbackConfig:
    config = TextbackConfig(
        enabled=s.flag("enabled", True),
        delay_seconds=s.number("delay_seconds", 0.0, low=0, high=3600),
        expiry_minutes=s.number("expiry_minutes", 30.0, low=1, high=24 * 60),
        repeat_window_hours=s.number("repeat_window_hours", 24.0, low=0, high=24 * 31),
        max_parts=int(s.number("max_parts", 3, low=1, high=10, integer=True)),
        max_attempts=int(s.number("max_attempts", 5, low=1, high=50, integer=True)),
        retry_seconds=s.number("retry_seconds", 30.0, low=0.1, high=3600),
        per_number_per_day=int(s.number("per_number_per_day", 3, low=1, high=100, integer=True)),
        per_hour=int(s.number("per_hour", 60, low=1, high=10_000, integer=True)),
        open_template=_template(
            s,
            "open_template",
            "Sorry we missed your call at {business}! How can we help? Reply here and we'll "
            "get right back to you.",
        ),
        after_hours_template=_template(
            s,
            "after_hours_template",
            "Thanks for calling {business}. We're closed right now and open {next_open}. "
            "Reply with what you need and we'll get back to you.",
        ),
        closed_template=_template(
            s,
            "closed_template",
            "Thanks for calling {business}. We're closed today and open {next_open}. "
            "Reply with what you need and we'll get back to you.",
        ),
        opt_out_line=s.text("opt_out_line", "Reply STOP to opt out."),
    )
    s.reject_unknown()
    return config


def _e164s(s: _Section, name: str, country: str) -> tuple[str, ...]:
    numbers = []
    for value in s.texts(name):
        try:
            parsed = phonenumbers.parse(value, country)
        except phonenumbers.NumberParseException as exc:
            raise s.error(name, f"{value!r} is not a phone number") from exc
        if not phonenumbers.is_valid_number(parsed):
            raise s.error(name, f"{value!r} is not a valid phone number")
        numbers.append(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
    return tuple(numbers)


def _screening(s: _Section, business: BusinessConfig) -> ScreeningConfig:
    countries = s.texts("allowed_countries", (business.country,))
    for code in countries:
        if code.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise s.error("allowed_countries", f"{code!r} is not a two-letter country code")
    config = ScreeningConfig(
        allowed_countries=frozenset(c.upper() for c in countries),
        never_text=frozenset(_e164s(s, "never_text", business.country)),
        block_fixed_line=s.flag("block_fixed_line", False),
    )
    s.reject_unknown()
    return config


def _owner(s: _Section, business: BusinessConfig) -> OwnerConfig:
    config = OwnerConfig(
        numbers=_e164s(s, "numbers", business.country),
        notify=s.flag("notify", True),
        batch_seconds=s.number("batch_seconds", 60.0, low=0, high=3600),
        daily_digest=_time_of_day(s, "daily_digest"),
    )
    s.reject_unknown()
    return config


def _time_of_day(s: _Section, name: str) -> time | None:
    """ "18:00" -> 18:00; "" -> None."""
    value = s.text(name, "").strip()
    if not value:
        return None
    if re.fullmatch(r"\d\d:\d\d", value):
        with contextlib.suppress(ValueError):
            return time.fromisoformat(value)
    raise s.error(name, f'expected a time like "18:00" or "", got {value!r}')


def _words(s: _Section, name: str, default: tuple[str, ...]) -> frozenset[str]:
    return frozenset(" ".join(w.upper().split()) for w in s.texts(name, default))


def _keywords(s: _Section) -> KeywordsConfig:
    stop = (
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "REVOKE",
        "OPT OUT",
        "OPTOUT",
    )
    config = KeywordsConfig(
        stop_words=frozenset(stop) | _words(s, "extra_stop_words", ()),
        start_words=frozenset(("START", "UNSTOP")) | _words(s, "extra_start_words", ()),
        help_words=frozenset(("HELP", "INFO")) | _words(s, "extra_help_words", ()),
        stop_reply=_template(
            s,
            "stop_reply",
            "You're unsubscribed from {business} texts and won't get any more. Reply START "
            "to opt back in.",
        ),
        start_reply=_template(
            s, "start_reply", "You're subscribed to {business} texts again. Reply STOP to opt out."
        ),
        help_reply=_template(
            s, "help_reply", "{business}: call us on {phone}. Reply STOP to opt out."
        ),
        loop_guard_per_minute=int(
            s.number("loop_guard_per_minute", 12, low=1, high=1000, integer=True)
        ),
    )
    s.reject_unknown()
    return config


def _services(top: _Section) -> tuple[ServiceConfig, ...]:
    top.read.add("service")
    tables = top.data.get("service", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise top.error("service", "expected one or more [[service]] tables")
    services = []
    for index, table in enumerate(tables):
        s = _Section(top.file, f"service[{index}]", table)
        services.append(
            ServiceConfig(
                name=s.text("name", _REQUIRED, allow_empty=False),
                keywords=tuple(k.lower() for k in s.texts("keywords")),
                emergency=s.flag("emergency", False),
            )
        )
        s.reject_unknown()
    return tuple(services)


def _area(s: _Section) -> AreaConfig:
    config = AreaConfig(places=s.texts("places"), postcode_prefixes=s.texts("postcode_prefixes"))
    s.reject_unknown()
    return config


def _emergency(s: _Section) -> EmergencyConfig:
    config = EmergencyConfig(
        keywords=tuple(
            k.lower()
            for k in s.texts(
                "keywords",
                (
                    "burst",
                    "flooding",
                    "flooded",
                    "water everywhere",
                    "no power",
                    "sparks",
                    "smoke",
                    "no heat",
                ),
            )
        ),
        gas_keywords=tuple(
            k.lower()
            for k in s.texts(
                "gas_keywords",
                (
                    "smell gas",
                    "smell of gas",
                    "gas leak",
                    "smells like gas",
                    "huele a gas",
                    "olor a gas",
                    "fuga de gas",
                ),
            )
        ),
        gas_advice=s.text(
            "gas_advice",
            "If you smell gas: leave the building now, don't use switches or flames, and call "
            "911 from outside.",
            allow_empty=False,
        ),
        reply=_template(
            s,
            "reply",
            "That sounds urgent. We've alerted {business}; someone will call you back as soon "
            "as possible.",
        ),
    )
    s.reject_unknown()
    return config


def _booking(s: _Section) -> BookingConfig:
    config = BookingConfig(
        slot_minutes=int(s.number("slot_minutes", 120, low=15, high=24 * 60, integer=True)),
        jobs_per_slot=int(s.number("jobs_per_slot", 1, low=1, high=100, integer=True)),
        days_ahead=int(s.number("days_ahead", 14, low=1, high=365, integer=True)),
        offer=int(s.number("offer", 3, low=1, high=5, integer=True)),
    )
    s.reject_unknown()
    return config


def _conversation(s: _Section) -> ConversationConfig:
    config = ConversationConfig(
        enabled=s.flag("enabled", True),
        model_path=s.path("model_path", None),
        context_size=int(s.number("context_size", 2048, low=256, high=131072, integer=True)),
        threads=int(s.number("threads", 2, low=1, high=256, integer=True)),
        reply_timeout=s.number("reply_timeout", 5.0, low=0.1, high=120),
        stall_minutes=s.number("stall_minutes", 60.0, low=1, high=24 * 60),
    )
    s.reject_unknown()
    return config


def _log(s: _Section) -> LogConfig:
    level = s.text("level", "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise s.error("level", f"expected DEBUG, INFO, WARNING or ERROR, got {level!r}")
    config = LogConfig(level=level, show_numbers=s.flag("show_numbers", False))
    s.reject_unknown()
    return config


def effective(config: Config) -> dict[str, Any]:
    """The configuration as plain data for printing, with every secret masked."""

    def plain(value: Any) -> Any:
        if isinstance(value, Secret):
            return f"{MASK} (from {value.source})" if value.value else ""
        if is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, Path | date | time):
            return str(value)
        if isinstance(value, tuple | frozenset):
            items = [plain(v) for v in value]
            return sorted(items) if isinstance(value, frozenset) else items
        return value

    result = plain(config)
    assert isinstance(result, dict)
    return result
