"""Who gets a text-back, what it says and when: Policy on the shipped example config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callcatch.config import Config, load
from callcatch.numbers import classify
from callcatch.policy import Policy
from callcatch.store.texts import NumberFacts
from tests.daemon import write_config

NEW_YORK = "America/New_York"
# 2026-12-07 is a Monday.
MONDAY_10AM = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)
MONDAY_8PM = datetime(2026, 12, 8, 1, 0, tzinfo=UTC)
SUNDAY_NOON = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)
CHRISTMAS_NOON = datetime(2026, 12, 25, 17, 0, tzinfo=UTC)
FRESH = NumberFacts(False, False, None, None, 0, False)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load(
        write_config(
            tmp_path,
            owner__numbers='["+12125550188"]',
            screening__never_text='["+12125550199"]',
        )
    )


def decide(
    policy: Policy,
    raw: str,
    facts: NumberFacts | None = FRESH,
    hourly: int = 0,
    now: datetime = MONDAY_10AM,
) -> tuple[bool, str, str]:
    caller = classify(raw, "US")
    decision = policy.decide(raw, caller.e164, caller.reason, facts, hourly, now, now)
    return decision.send, decision.reason, decision.body


def test_open_hours_template_with_opt_out_line_the_first_time(config: Config) -> None:
    send, _, body = decide(Policy(config), "+12125550123")
    assert send
    assert body.startswith("Sorry we missed your call at Example Plumbing!")
    assert body.endswith("Reply STOP to opt out.")


def test_no_opt_out_line_once_the_number_was_texted(config: Config) -> None:
    texted = NumberFacts(False, False, None, None, 0, True)
    _, _, body = decide(Policy(config), "+12125550123", facts=texted)
    assert "STOP" not in body


def test_after_hours_says_when_the_shop_opens(config: Config) -> None:
    _, _, body = decide(Policy(config), "+12125550123", now=MONDAY_8PM)
    assert "closed right now" in body
    assert "tomorrow at 08:00" in body


def test_closed_day_and_holiday_use_the_closed_template(config: Config) -> None:
    _, _, sunday = decide(Policy(config), "+12125550123", now=SUNDAY_NOON)
    _, _, christmas = decide(Policy(config), "+12125550123", now=CHRISTMAS_NOON)
    assert "closed today" in sunday and "tomorrow at 08:00" in sunday
    assert "closed today" in christmas and "tomorrow at 09:00" in christmas  # a Friday


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "withheld"),
        ("anonymous", "anonymous"),
        ("101", "internal extension"),
        ("+12125550199", "never-text"),
        ("+12125550188", "owner"),
        ("+442079460958", "allowed countries (GB)"),
        ("+19005550123", "premium-rate"),
        ("<script>", "not a phone number"),
    ],
)
def test_never_texted(config: Config, raw: str, reason: str) -> None:
    send, why, _ = decide(Policy(config), raw)
    assert not send
    assert reason in why


@pytest.mark.parametrize(
    ("facts", "hourly", "reason"),
    [
        (NumberFacts(True, False, None, None, 0, True), 0, "opted out"),
        (NumberFacts(False, True, None, None, 0, True), 0, "muted"),
        (
            NumberFacts(False, False, MONDAY_10AM - timedelta(minutes=5), None, 1, True),
            0,
            "repeat window",
        ),
        (
            NumberFacts(False, False, None, MONDAY_10AM - timedelta(hours=1), 0, True),
            0,
            "conversation",
        ),
        (NumberFacts(False, False, None, None, 3, True), 0, "to this number"),
        (FRESH, 60, "in the last hour"),
    ],
)
def test_dynamic_limits(config: Config, facts: NumberFacts, hourly: int, reason: str) -> None:
    send, why, _ = decide(Policy(config), "+12125550123", facts=facts, hourly=hourly)
    assert not send
    assert reason in why


def test_repeat_window_ends(config: Config) -> None:
    old = NumberFacts(False, False, MONDAY_10AM - timedelta(hours=25), None, 0, True)
    assert decide(Policy(config), "+12125550123", facts=old)[0]


def test_too_late_after_the_expiry(config: Config) -> None:
    policy = Policy(config)
    caller = classify("+12125550123", "US")
    ended = MONDAY_10AM - timedelta(minutes=31)
    decision = policy.decide("+12125550123", caller.e164, "", FRESH, 0, MONDAY_10AM, ended)
    assert not decision.send
    assert "too late" in decision.reason


def test_expiry_counts_from_the_end_of_the_call(config: Config) -> None:
    policy = Policy(config)
    caller = classify("+12125550123", "US")
    ended = MONDAY_10AM - timedelta(minutes=10)
    decision = policy.decide("+12125550123", caller.e164, "", FRESH, 0, MONDAY_10AM, ended)
    assert decision.expires_at == ended + timedelta(minutes=30)


def test_delay_sets_not_before(tmp_path: Path) -> None:
    policy = Policy(load(write_config(tmp_path, textback__delay_seconds="20")))
    caller = classify("+12125550123", "US")
    decision = policy.decide("+12125550123", caller.e164, "", FRESH, 0, MONDAY_10AM, MONDAY_10AM)
    assert decision.not_before == MONDAY_10AM + timedelta(seconds=20)


def test_switched_off(tmp_path: Path) -> None:
    policy = Policy(load(write_config(tmp_path, textback__enabled="false")))
    assert decide(policy, "+12125550123")[1] == "text-back is switched off"


def test_fixed_line_blocked_only_where_the_plan_knows(tmp_path: Path) -> None:
    policy = Policy(
        load(
            write_config(
                tmp_path,
                screening__allowed_countries='["GB"]',
                screening__block_fixed_line="true",
            )
        )
    )
    caller = classify("+442079460958", "GB")
    decision = policy.decide(caller.raw, caller.e164, "", FRESH, 0, MONDAY_10AM, MONDAY_10AM)
    assert "fixed-line" in decision.reason
    mobile = classify("+447400123456", "GB")
    assert policy.screen(mobile.raw, mobile.e164, "") is None


def test_unknown_placeholder_is_a_config_error(tmp_path: Path) -> None:
    from callcatch.config import ConfigError

    with pytest.raises(ConfigError, match=r"textback.open_template.*\{price\}"):
        load(write_config(tmp_path, textback__open_template='"We charge {price}"'))
