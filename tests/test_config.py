from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from callcatch import cli
from callcatch import config as configuration
from callcatch.config import ConfigError, load

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "callcatch.example.toml"
AMI_SECRET = "ami-Zq9xK2-do-not-print"
ARI_PASSWORD = "ari-Wv7yP4-do-not-print"

Edits = dict[tuple[str, str], str | None]


def edit(text: str, section: str, key: str, value: str | None) -> str:
    """Set ``key = value`` (raw TOML) in ``[section]``; None removes the key."""
    lines = text.splitlines()
    start = lines.index(f"[{section}]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    pattern = re.compile(rf"^{re.escape(key)}\s*=")
    for i in range(start + 1, end):
        if pattern.match(lines[i]):
            if value is None:
                del lines[i]
            else:
                lines[i] = f"{key} = {value}"
            break
    else:
        if value is not None:
            lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def toml_str(value: str | Path) -> str:
    return json.dumps(str(value))


def write_config(directory: Path, edits: Edits | None = None) -> Path:
    """The shipped example, edited as an installer would, written into ``directory``."""
    text = EXAMPLE.read_text(encoding="utf-8")
    changes: Edits = {
        ("store", "path"): toml_str(directory / "callcatch.db"),
        ("ami", "secret"): toml_str(AMI_SECRET),
        ("ari", "password"): toml_str(ARI_PASSWORD),
        ("cdr", "csv_path"): toml_str(directory / "Master.csv"),
    }
    changes.update(edits or {})
    for (section, key), value in changes.items():
        text = edit(text, section, key, value)
    path = directory / "callcatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCATCH_")}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _no_callcatch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CALLCATCH_"):
            monkeypatch.delenv(name)


# -- the CLI as a process: every case runs at once, in its own folder ----------------------

Setup = Callable[[Path], tuple[list[str], dict[str, str]]]


def with_edits(edits: Edits) -> Setup:
    def setup(directory: Path) -> tuple[list[str], dict[str, str]]:
        return ["--config", str(write_config(directory, edits))], {}

    return setup


def with_text(text: str) -> Setup:
    def setup(directory: Path) -> tuple[list[str], dict[str, str]]:
        path = directory / "callcatch.toml"
        path.write_text(text, encoding="utf-8")
        return ["--config", str(path)], {}

    return setup


def with_bytes(content: bytes) -> Setup:
    def setup(directory: Path) -> tuple[list[str], dict[str, str]]:
        path = directory / "callcatch.toml"
        path.write_bytes(content)
        return ["--config", str(path)], {}

    return setup


def with_secret_file(content: bytes | None) -> Setup:
    def setup(directory: Path) -> tuple[list[str], dict[str, str]]:
        secret = directory / "ami.secret"
        if content is None:
            secret.mkdir()
        else:
            secret.write_bytes(content)
        edits: Edits = {("ami", "secret"): None, ("ami", "secret_file"): toml_str(secret)}
        return ["--config", str(write_config(directory, edits))], {}

    return setup


def missing_file(directory: Path) -> tuple[list[str], dict[str, str]]:
    return ["--config", str(directory / "absent.toml")], {}


def valid(directory: Path) -> tuple[list[str], dict[str, str]]:
    return ["--config", str(write_config(directory))], {}


def valid_from_env(directory: Path) -> tuple[list[str], dict[str, str]]:
    return [], {"CALLCATCH_CONFIG": str(write_config(directory))}


ERRORS: dict[str, tuple[Setup, str]] = {
    "missing file": (missing_file, ""),
    "invalid TOML": (with_text("[ami]\nport = = 5038\n"), ""),
    "not UTF-8": (with_bytes(b"[business]\nname = '\xff'\n"), ""),
    "wrong type": (with_edits({("ami", "port"): '"5038"'}), "ami.port"),
    "port out of range": (with_edits({("ami", "port"): "70000"}), "ami.port"),
    "port zero": (with_edits({("ami", "port"): "0"}), "ami.port"),
    "unknown key": (with_edits({("ami", "colour"): '"red"'}), "ami.colour"),
    "misspelt key": (
        with_edits({("ami", "ping_interval"): None, ("ami", "ping_intervall"): "5.0"}),
        "ami.ping_intervall",
    ),
    "unknown section": (with_text(EXAMPLE.read_text() + "\n[amii]\nport = 1\n"), "amii"),
    "unknown country": (with_edits({("business", "country"): '"XX"'}), "business.country"),
    "bad timezone": (
        with_edits({("business", "timezone"): '"Mars/Olympus_Mons"'}),
        "business.timezone",
    ),
    "bad cdr timezone": (with_edits({("cdr", "timezone"): '"EST+5"'}), "cdr.timezone"),
    "missing secret": (with_edits({("ami", "secret"): None}), "ami.secret"),
    "missing password": (with_edits({("ari", "password"): None}), "ari.password"),
    "unreadable secret_file": (with_secret_file(None), "ami.secret_file"),
    "absent secret_file": (
        with_edits({("ami", "secret"): None, ("ami", "secret_file"): '"nowhere.secret"'}),
        "ami.secret_file",
    ),
    "empty secret_file": (with_secret_file(b" \n\n"), "ami.secret_file"),
    "line without slash": (with_edits({("lines", "trunks"): '["carrier"]'}), "lines.trunks"),
    "analog without slash": (with_edits({("lines", "analog"): '["DAHDI"]'}), "lines.analog"),
    "no lines": (
        with_edits({("lines", "trunks"): "[]", ("lines", "analog"): "[]"}),
        "lines.trunks",
    ),
    "bad log level": (with_edits({("log", "level"): '"LOUD"'}), "log.level"),
    "bad ari url": (with_edits({("ari", "url"): '"localhost:8088"'}), "ari.url"),
}


def valid_with_secrets_in_env(directory: Path) -> tuple[list[str], dict[str, str]]:
    path = write_config(directory, {("ami", "secret"): None, ("ari", "password"): None})
    env = {"CALLCATCH_AMI_SECRET": AMI_SECRET, "CALLCATCH_ARI_PASSWORD": ARI_PASSWORD}
    return ["--config", str(path)], env


SUCCESSES: dict[str, Setup] = {
    "check-config": valid,
    "CALLCATCH_CONFIG": valid_from_env,
    "secrets in environment": valid_with_secrets_in_env,
}


AS_A_PROCESS = ["missing file", "invalid TOML", "wrong type", "misspelt key", "missing secret"]

Runs = dict[str, tuple[Path, subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """``callcatch check-config`` as real processes, started together to keep this quick."""
    started = {}
    cases = {name: ERRORS[name][0] for name in AS_A_PROCESS} | SUCCESSES
    for name, setup in cases.items():
        directory = tmp_path_factory.mktemp("case")
        args, env = setup(directory)
        process = subprocess.Popen(
            [sys.executable, "-m", "callcatch", "check-config", *args],
            cwd=directory,
            env=clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        config = Path(args[1]) if args else Path(env["CALLCATCH_CONFIG"])
        started[name] = (config, process)
    runs = {}
    for name, (config, process) in started.items():
        out, err = process.communicate(timeout=30)
        runs[name] = (
            config,
            subprocess.CompletedProcess(process.args, process.returncode, out, err),
        )
    return runs


def assert_one_line_error(config: Path, key: str, code: int, out: str, err: str) -> None:
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("callcatch: configuration error: ")
    assert str(config) in lines[0]
    if key:
        assert f": {key}: " in lines[0]


@pytest.mark.parametrize("case", AS_A_PROCESS)
def test_cli_process_exits_2_with_one_line_naming_file_and_key(case: str, cli_runs: Runs) -> None:
    config, run = cli_runs[case]
    assert_one_line_error(config, ERRORS[case][1], run.returncode, run.stdout, run.stderr)


@pytest.mark.parametrize("case", list(ERRORS))
def test_every_config_error_gives_status_2_and_one_line(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup, key = ERRORS[case]
    args, env = setup(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check-config", *args])
    out, err = capsys.readouterr()
    assert_one_line_error(Path(args[1]), key, code, out, err)


@pytest.mark.parametrize("case", list(SUCCESSES))
def test_check_config_prints_effective_config_with_secrets_masked(
    case: str, cli_runs: Runs
) -> None:
    config, run = cli_runs[case]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert AMI_SECRET not in run.stdout
    assert ARI_PASSWORD not in run.stdout
    header, _, body = run.stdout.partition("\n")
    assert header == f"# {config}: valid"
    shown = json.loads(body)
    assert shown["ami"]["secret"].startswith(configuration.MASK)
    assert shown["ari"]["password"].startswith(configuration.MASK)
    assert shown["ami"]["port"] == 5038
    assert shown["lines"] == {"trunks": ["PJSIP/carrier"], "analog": ["DAHDI/"]}
    assert shown["store"]["path"] == str(config.parent / "callcatch.db")


# -- loading, in process -------------------------------------------------------------------


def test_shipped_example_loads_with_secrets_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLCATCH_AMI_SECRET", AMI_SECRET)
    monkeypatch.setenv("CALLCATCH_ARI_PASSWORD", ARI_PASSWORD)
    path = write_config(tmp_path, {("ami", "secret"): None, ("ari", "password"): None})
    config = load(path)
    assert config.source == path
    assert config.business.country == "US"
    assert config.business.timezone == "America/New_York"
    assert config.ami.port == 5038
    assert config.ami.secret.value == AMI_SECRET
    assert config.ari.password.value == ARI_PASSWORD
    assert config.ari.enabled is True
    assert config.lines.trunks == ("PJSIP/carrier",)
    assert config.lines.analog == ("DAHDI/",)
    assert config.cdr.sqlite_path is None
    assert config.cdr.forwarded_contexts == ("callcatch-forwarded",)
    assert config.store.path == tmp_path / "callcatch.db"
    assert config.log.show_numbers is False


def test_shipped_example_as_is_loads() -> None:
    config = load(EXAMPLE)
    assert config.store.path == Path("/var/lib/callcatch/callcatch.db")
    assert config.ami.secret.source == "config file"


def test_environment_secret_wins_over_file_and_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ami.secret").write_text("from-file\n", encoding="utf-8")
    path = write_config(tmp_path, {("ami", "secret_file"): '"ami.secret"'})
    monkeypatch.setenv("CALLCATCH_AMI_SECRET", "from-env")
    secret = load(path).ami.secret
    assert secret.value == "from-env"
    assert secret.source == "environment CALLCATCH_AMI_SECRET"


def test_secret_file_wins_over_inline_and_is_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "ami.secret").write_text("  from-file \n", encoding="utf-8")
    path = write_config(tmp_path, {("ami", "secret_file"): '"ami.secret"'})
    secret = load(path).ami.secret
    assert secret.value == "from-file"
    assert secret.source == f"file {tmp_path / 'ami.secret'}"


def test_ari_password_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ari.secret").write_text("ari-from-file", encoding="utf-8")
    path = write_config(tmp_path, {("ari", "password_file"): '"ari.secret"'})
    assert load(path).ari.password.value == "ari-from-file"
    monkeypatch.setenv("CALLCATCH_ARI_PASSWORD", "ari-from-env")
    assert load(path).ari.password.value == "ari-from-env"


def test_empty_environment_secret_falls_back_to_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLCATCH_AMI_SECRET", "")
    assert load(write_config(tmp_path)).ami.secret.value == AMI_SECRET


def test_disabled_ari_needs_no_password(tmp_path: Path) -> None:
    path = write_config(tmp_path, {("ari", "enabled"): "false", ("ari", "password"): None})
    config = load(path)
    assert config.ari.enabled is False
    assert configuration.effective(config)["ari"]["password"] == ""


def test_secrets_never_show_in_repr_str_or_effective(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    printed = repr(config) + str(config.ami.secret) + json.dumps(configuration.effective(config))
    assert AMI_SECRET not in printed
    assert ARI_PASSWORD not in printed


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    edits: Edits = {("store", "path"): '"data/callcatch.db"', ("cdr", "sqlite_path"): '"m.db"'}
    config = load(write_config(tmp_path, edits))
    assert config.store.path == tmp_path / "data" / "callcatch.db"
    assert config.cdr.sqlite_path == tmp_path / "m.db"


def test_country_is_case_insensitive(tmp_path: Path) -> None:
    assert load(write_config(tmp_path, {("business", "country"): '"gb"'})).business.country == "GB"


def test_resolve_path_prefers_cli_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert configuration.resolve_path(None) == configuration.DEFAULT_PATH
    monkeypatch.setenv("CALLCATCH_CONFIG", "/from/env.toml")
    assert configuration.resolve_path(None) == Path("/from/env.toml")
    assert configuration.resolve_path("/from/cli.toml") == Path("/from/cli.toml")


@pytest.mark.parametrize(
    ("edits", "key"),
    [
        ({("ami", "port"): "5038.5"}, "ami.port"),
        ({("ami", "port"): "true"}, "ami.port"),
        ({("ami", "port"): "nan"}, "ami.port"),
        ({("ami", "ping_interval"): "0.0"}, "ami.ping_interval"),
        ({("ami", "host"): '""'}, "ami.host"),
        ({("ami", "secret"): '"   "'}, "ami.secret"),
        ({("ami", "secret_file"): '""'}, "ami.secret_file"),
        ({("store", "path"): '""'}, "store.path"),
        ({("store", "path"): "5"}, "store.path"),
        ({("business", "country"): '"UK"'}, "business.country"),
        ({("business", "name"): None}, "business.name"),
        ({("lines", "trunks"): '"PJSIP/carrier"'}, "lines.trunks"),
        ({("lines", "trunks"): '[""]'}, "lines.trunks"),
        ({("cdr", "lookback_hours"): "-1"}, "cdr.lookback_hours"),
        ({("log", "show_numbers"): '"yes"'}, "log.show_numbers"),
        ({("owner", "daily_digest"): '"25:00"'}, "owner.daily_digest"),
        ({("owner", "daily_digest"): '"6pm"'}, "owner.daily_digest"),
        ({("owner", "daily_digest"): "18"}, "owner.daily_digest"),
    ],
)
def test_more_errors_name_their_key(tmp_path: Path, edits: Edits, key: str) -> None:
    path = write_config(tmp_path, edits)
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.key == key
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(f"{path}: {key}: ")


def test_a_section_that_is_not_a_table(tmp_path: Path) -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["ami"] = "127.0.0.1"
    with pytest.raises(ConfigError) as caught:
        configuration.parse(data, tmp_path / "callcatch.toml")
    assert caught.value.key == "ami"


def test_config_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path)
    assert caught.value.file == str(tmp_path)


@pytest.mark.parametrize("zone", ["America", "a" * 300], ids=["region-folder", "too-long"])
def test_timezone_that_is_a_folder_or_too_long_is_a_config_error(
    tmp_path: Path, zone: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, {("business", "timezone"): toml_str(zone)}))
    assert caught.value.key == "business.timezone"


def test_secret_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "ami.secret").write_bytes(b"\xff\xfe\x93secret")
    edits: Edits = {("ami", "secret"): None, ("ami", "secret_file"): '"ami.secret"'}
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, edits))
    assert caught.value.key == "ami.secret_file"


def test_path_with_unknown_home_is_a_config_error(tmp_path: Path) -> None:
    edits: Edits = {("cdr", "csv_path"): '"~no-such-user-callcatch/Master.csv"'}
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, edits))
    assert caught.value.key == "cdr.csv_path"


def test_error_about_a_mistyped_secret_does_not_print_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write_config(tmp_path, {("ami", "secret"): "98765432"}))
    assert caught.value.key == "ami.secret"
    assert "98765432" not in str(caught.value)
