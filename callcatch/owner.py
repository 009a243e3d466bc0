"""The owner's texts: one summary for the missed calls that arrive close together, and
an optional daily digest.

Each missed call leaves a notice row when its text-back is decided; a batch goes out when
its oldest notice is ``batch_seconds`` old (0: at once). Notices are rows, so a restart loses
none and sends none twice.

The digest goes out at ``[owner] daily_digest`` (local time): the 24 hours before it in
numbers, and tomorrow's visits. Its outbox row is keyed by its day, so a restart neither
repeats nor loses it; a daemon started after the hour sends that day's digest at once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from callcatch.config import Config
from callcatch.store import AsyncStore, digest
from callcatch.store import texts as q
from callcatch.tasks import sleep_unless

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
OWNER_EXPIRY = timedelta(hours=12)
_MAX_LINES = 8
_MAX_VISITS = 4  # the digest stays within three SMS parts
_VISIT_CHARS = 60


class OwnerNotifier:
    def __init__(self, config: Config, store: AsyncStore, wakeup: asyncio.Event) -> None:
        self.config = config
        self.store = store
        self.wakeup = wakeup
        self.zone = ZoneInfo(config.business.timezone)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.flush()
            if await sleep_unless(stopping, POLL_SECONDS):
                return

    async def flush(self, force: bool = False) -> bool:
        notices = await self.store.call(q.pending_owner_notices)
        if not notices:
            return False
        now = q.now_utc()
        oldest = datetime.fromisoformat(notices[0]["noticed_at"])
        if not force and now - oldest < timedelta(seconds=self.config.owner.batch_seconds):
            return False
        body = self.summary(notices)
        await self.store.call(
            q.queue_owner_summary,
            [n["notice_id"] for n in notices],
            list(self.config.owner.numbers),
            body,
            now,
            now + OWNER_EXPIRY,
        )
        log.info("owner summary queued for %d missed call(s)", len(notices))
        self.wakeup.set()
        return True

    def summary(self, notices: list[dict[str, Any]]) -> str:
        count = len(notices)
        lines = [f"{count} missed call{'s' if count > 1 else ''}:"]
        for notice in notices[:_MAX_LINES]:
            when = datetime.fromisoformat(notice["started_at"]).astimezone(self.zone)
            who = notice["caller_e164"] or notice["caller_status"]
            if notice["textback"] == "queued":
                action = "texted back"
            else:
                action = f"not texted: {notice['textback_reason'] or 'undecided'}"
            lines.append(f"{when:%H:%M} {who} ({notice['outcome']}), {action}")
        if count > _MAX_LINES:
            lines.append(f"and {count - _MAX_LINES} more: callcatch calls")
        return "\n".join(lines)


class DailyDigest:
    def __init__(self, config: Config, store: AsyncStore, wakeup: asyncio.Event) -> None:
        self.config = config
        self.store = store
        self.wakeup = wakeup
        self.zone = ZoneInfo(config.business.timezone)

    async def send_if_due(self, now: datetime | None = None) -> bool:
        """Queue today's digest when its time has come and it is not queued yet."""
        at = self.config.owner.daily_digest
        now = now or q.now_utc()
        local = now.astimezone(self.zone)
        if at is None or local.time() < at:
            return False
        today = local.date()
        until = datetime.combine(today, at, self.zone)
        since = datetime.combine(today - timedelta(days=1), at, self.zone)
        tomorrow = (
            datetime.combine(today + timedelta(days=1), time(), self.zone),
            datetime.combine(today + timedelta(days=2), time(), self.zone),
        )
        counts = await self.store.call(digest.day, since, until, tomorrow)
        body = self.body(local, counts)
        queued = False
        for number in self.config.owner.numbers:
            row = await self.store.call(
                q.queue,
                kind=q.OWNER,
                number=number,
                body=body,
                now=now,
                expires_at=now + OWNER_EXPIRY,
                linkedid=f"digest {today.isoformat()}",
            )
            queued = queued or row is not None
        if queued:
            log.info("daily digest queued for %s", today.isoformat())
            self.wakeup.set()
        else:
            log.debug("daily digest for %s was queued before", today.isoformat())
        return queued

    def body(self, local: datetime, day: digest.Day) -> str:
        def n(count: int, what: str) -> str:
            return f"{count} {what}{'' if count == 1 else 's'}"

        lines = [
            f"callcatch, {local:%a} {local.day} {local:%b}: {n(day.missed, 'missed call')}, "
            f"{day.texted} texted back, {n(day.conversations, 'conversation')}, "
            f"{day.booked} booked, {day.cancelled} cancelled, {day.opted_out} opted out."
        ]
        visits = day.visits_next
        if not visits:
            lines.append("Tomorrow: no visits booked.")
        else:
            lines.append(f"Tomorrow: {n(len(visits), 'visit')}:")
            for visit in visits[:_MAX_VISITS]:
                starts = datetime.fromisoformat(visit["starts_at"]).astimezone(self.zone)
                who = ", ".join(
                    v for v in (visit["name"], visit["service"], visit["address"]) if v
                )
                lines.append(f"{starts:%H:%M} {who}"[:_VISIT_CHARS])
            if len(visits) > _MAX_VISITS:
                lines.append(f"and {len(visits) - _MAX_VISITS} more: callcatch bookings")
        return "\n".join(lines)
