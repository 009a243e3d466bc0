"""What one inbound call came to, as the detectors report it to the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Outcome(StrEnum):
    ANSWERED = "answered"
    CALLER_HUNG_UP = "caller-hung-up"
    NO_ANSWER = "no-answer"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"
    VOICEMAIL = "voicemail"

    @property
    def missed(self) -> bool:
        return self is not Outcome.ANSWERED


class Detection(StrEnum):
    AMI = "ami"
    ARI = "ari"
    CDR_BACKFILL = "cdr-backfill"


# DIALSTATUS (and the hook's DialStatus) as Asterisk's Dial() leaves it on the caller.
_DIAL_OUTCOMES = {
    "ANSWER": Outcome.ANSWERED,
    "CANCEL": Outcome.CALLER_HUNG_UP,
    "NOANSWER": Outcome.NO_ANSWER,
    "BUSY": Outcome.BUSY,
    "CONGESTION": Outcome.UNAVAILABLE,
    "CHANUNAVAIL": Outcome.UNAVAILABLE,
    "DONTCALL": Outcome.NO_ANSWER,
    "TORTURE": Outcome.NO_ANSWER,
    "INVALIDARGS": Outcome.UNAVAILABLE,
}

# REDIRECTING(reason) values (Asterisk's, and the SIP Diversion reasons they come from),
# for calls that were forwarded to us unanswered.
_REDIRECT_OUTCOMES = {
    "cfnr": Outcome.NO_ANSWER,
    "cfb": Outcome.BUSY,
    "cfnrc": Outcome.UNAVAILABLE,
    "no_answer": Outcome.NO_ANSWER,
    "user_busy": Outcome.BUSY,
    "unavailable": Outcome.UNAVAILABLE,
    "unreachable": Outcome.UNAVAILABLE,
    "out_of_order": Outcome.UNAVAILABLE,
    "away": Outcome.UNAVAILABLE,
    "dnd": Outcome.BUSY,
}


def outcome_of_dial(dial_status: str | None) -> Outcome:
    """The outcome a dial status stands for; no dial at all means the caller gave up."""
    return _DIAL_OUTCOMES.get((dial_status or "").strip().upper(), Outcome.CALLER_HUNG_UP)


def outcome_of_redirect(reason: str | None) -> Outcome:
    """The outcome behind a forwarded call's redirecting reason (default: no answer)."""
    key = (reason or "").strip().lower().replace("-", "_").replace(" ", "_")
    return _REDIRECT_OUTCOMES.get(key, Outcome.NO_ANSWER)


@dataclass(frozen=True)
class CallRecord:
    """One inbound call, keyed by Asterisk's linkedid."""

    linkedid: str
    caller: str
    caller_name: str
    did: str | None
    forwarded_from: str | None
    line: str
    started_at: datetime
    ended_at: datetime
    outcome: Outcome
    detected_by: Detection
    signal: str

    @property
    def missed(self) -> bool:
        return self.outcome.missed
