"""The owner's texts: one summary for the missed calls that arrive close together.

Each missed call leaves a notice row when its text-back is decided; a batch goes out when
its oldest notice is ``batch_seconds`` old (0: at once). Notices are rows, so a restart loses
none and sends none twice.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from callcatch.config import Config
from callcatch.store import AsyncStore
from callcatch.store import texts as q
from callcatch.tasks import sleep_unless

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
OWNER_EXPIRY = timedelta(hours=12)
_MAX_LINES = 8


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
