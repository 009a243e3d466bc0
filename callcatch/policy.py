"""Who gets a text-back, what it says, and when.

Screening is deliberately strict: a missed-call text-back is only worth sending to a real
mobile in the shop's own country, and every text to a number the shop does not want to reach
costs money or trust (SMS pumping fraud lives on premium and foreign numbers). Every skip has
a reason that is recorded with the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import PhoneNumberType

from callcatch.config import Config
from callcatch.store.texts import NumberFacts

# Number types that never receive a text-back, whatever the configuration says.
_NEVER_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate number",
    PhoneNumberType.SHARED_COST: "shared-cost number",
    PhoneNumberType.PAGER: "pager number",
    PhoneNumberType.VOICEMAIL: "voicemail access number",
    PhoneNumberType.UAN: "universal access number",
}
_INTERNAL_MAX_DIGITS = 6


@dataclass(frozen=True)
class Decision:
    send: bool
    reason: str = ""
    body: str = ""
    not_before: datetime | None = None
    expires_at: datetime | None = None


class Policy:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.zone = ZoneInfo(config.business.timezone)
        self.owner_numbers = frozenset(config.owner.numbers)

    # -- screening ---------------------------------------------------------------------

    def screen(self, caller_raw: str, caller_e164: str | None, caller_reason: str) -> str | None:
        """Why this caller is never texted, or None when they may be."""
        digits = caller_raw.strip()
        if digits.isdigit() and len(digits) <= _INTERNAL_MAX_DIGITS:
            return "internal extension"
        if caller_e164 is None:
            return caller_reason or "caller id is not a number"
        screening = self.config.screening
        if caller_e164 in screening.never_text:
            return "on the never-text list"
        if caller_e164 in self.owner_numbers:
            return "the owner's own number"
        number = phonenumbers.parse(caller_e164)
        region = phonenumbers.region_code_for_number(number) or "unknown"
        if region not in screening.allowed_countries:
            return f"outside the allowed countries ({region})"
        kind = phonenumbers.number_type(number)
        if kind in _NEVER_TYPES:
            return _NEVER_TYPES[kind]
        if screening.block_fixed_line and kind == PhoneNumberType.FIXED_LINE:
            return "fixed-line number (cannot receive texts)"
        return None

    def check(self, facts: NumberFacts, textbacks_last_hour: int, now: datetime) -> str | None:
        """Why this number may not be texted back right now, or None."""
        textback = self.config.textback
        window = timedelta(hours=textback.repeat_window_hours)
        if facts.opted_out:
            return "opted out"
        if facts.muted:
            return "muted (it texts like an auto-responder)"
        if facts.last_textback is not None and now - facts.last_textback < window:
            minutes = int((now - facts.last_textback).total_seconds() // 60)
            return f"already texted back {minutes} min ago (repeat window)"
        if facts.last_inbound is not None and now - facts.last_inbound < window:
            return "a conversation with this number is open"
        if facts.texts_last_day >= textback.per_number_per_day:
            return f"rate limit: {facts.texts_last_day} texts to this number in 24 h"
        if textbacks_last_hour >= textback.per_hour:
            return f"rate limit: {textbacks_last_hour} text-backs in the last hour"
        return None

    # -- what it says ------------------------------------------------------------------

    def greeting(self, now: datetime, first_text: bool) -> str:
        textback = self.config.textback
        local = now.astimezone(self.zone)
        if self._closed_on(local.date()):
            template = textback.closed_template
        elif self._open_at(local):
            template = textback.open_template
        else:
            template = textback.after_hours_template
        body = self.fill(template, now)
        if first_text and textback.opt_out_line:
            body = f"{body} {textback.opt_out_line}"
        return body

    def fill(self, template: str, now: datetime) -> str:
        business = self.config.business
        return template.format(
            business=business.name, phone=business.phone, next_open=self.next_open(now)
        )

    def _ranges(self, day: date) -> tuple[tuple[time, time], ...]:
        if day in self.config.hours.holidays:
            return ()
        return self.config.hours.week[day.weekday()]

    def _closed_on(self, day: date) -> bool:
        return not self._ranges(day)

    def _open_at(self, local: datetime) -> bool:
        moment = local.time()
        return any(opens <= moment < closes for opens, closes in self._ranges(local.date()))

    def next_open(self, now: datetime) -> str:
        """When the shop next opens, in words: "today at 08:00", "Monday at 08:00"."""
        local = now.astimezone(self.zone)
        for offset in range(15):
            day = local.date() + timedelta(days=offset)
            for opens, _ in self._ranges(day):
                if offset == 0 and opens <= local.time():
                    continue
                when = opens.strftime("%H:%M")
                if offset == 0:
                    return f"today at {when}"
                if offset == 1:
                    return f"tomorrow at {when}"
                return f"{day.strftime('%A')} at {when}"
        return "soon"

    # -- the decision ------------------------------------------------------------------

    def decide(
        self,
        caller_raw: str,
        caller_e164: str | None,
        caller_reason: str,
        facts: NumberFacts | None,
        textbacks_last_hour: int,
        now: datetime,
        call_ended: datetime,
    ) -> Decision:
        """``call_ended`` starts the clock: a text-back is never sent later than
        ``expiry_minutes`` after the missed call, however it was found (a CDR backfill of a
        call from this morning finds it too late)."""
        textback = self.config.textback
        if not textback.enabled:
            return Decision(False, "text-back is switched off")
        expires_at = call_ended + timedelta(minutes=textback.expiry_minutes)
        if now >= expires_at:
            minutes = int((now - call_ended).total_seconds() // 60)
            return Decision(False, f"too late: the call ended {minutes} min ago")
        reason = self.screen(caller_raw, caller_e164, caller_reason)
        if reason is None and facts is not None:
            reason = self.check(facts, textbacks_last_hour, now)
        if reason is not None:
            return Decision(False, reason)
        not_before = now + timedelta(seconds=textback.delay_seconds)
        return Decision(
            True,
            body=self.greeting(now, first_text=facts is None or not facts.ever_texted),
            not_before=not_before,
            expires_at=expires_at,
        )
