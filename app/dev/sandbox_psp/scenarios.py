"""The scenarios a create request can ask for, as two decisions: what the create call answers
(:func:`gate`) and how the payment's webhooks are sent (:func:`webhook_plan`).

Everything a scenario does not mention behaves like ``succeed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SUCCEED = "succeed"
DECLINE = "decline"
DECLINE_THEN_SUCCEED = "decline-then-succeed"
TIMEOUT = "timeout"
BURST_5XX = "5xx-burst"
RATE_LIMIT = "429"
DUPLICATE_WEBHOOKS = "duplicate-webhooks"
DELAYED_WEBHOOK = "delayed-webhook"
OUT_OF_ORDER_WEBHOOKS = "out-of-order-webhooks"
HELD_FOR_KYC = "held-for-kyc"
BAD_SIGNATURE = "bad-signature"

SCENARIOS = frozenset(
    {
        SUCCEED,
        DECLINE,
        DECLINE_THEN_SUCCEED,
        TIMEOUT,
        BURST_5XX,
        RATE_LIMIT,
        DUPLICATE_WEBHOOKS,
        DELAYED_WEBHOOK,
        OUT_OF_ORDER_WEBHOOKS,
        HELD_FOR_KYC,
        BAD_SIGNATURE,
    }
)

# How many times the duplicate-webhooks scenario sends each event.
DUPLICATE_COPIES = 3
# The secret bad-signature signs with: never the configured one, since that cannot be empty.
WRONG_SECRET = b"not-the-webhook-secret"


class Gate(enum.Enum):
    """What a create call does, given the scenario and how many calls came before it."""

    PROCEED = "proceed"  # create the payment and answer 201
    UNAVAILABLE = "unavailable"  # answer 503, create nothing
    RATE_LIMITED = "rate_limited"  # answer 429 with Retry-After, create nothing
    DECLINE = "decline"  # create the payment as failed (declined) and answer 201
    SLOW = "slow"  # create the payment, then hold the answer back past the caller's timeout


def gate(scenario: str, attempt: int, burst: int) -> Gate:
    """The fate of create call number ``attempt`` (from 1) for one reference under ``scenario``.

    Idempotent replays never get here: they are answered from what the first call stored.
    """
    if scenario == DECLINE:
        return Gate.DECLINE
    if scenario == DECLINE_THEN_SUCCEED and attempt == 1:
        return Gate.DECLINE
    if scenario == BURST_5XX and attempt <= burst:
        return Gate.UNAVAILABLE
    if scenario == RATE_LIMIT and attempt == 1:
        return Gate.RATE_LIMITED
    if scenario == TIMEOUT and attempt == 1:
        return Gate.SLOW
    return Gate.PROCEED


@dataclass(frozen=True)
class WebhookPlan:
    """How the webhooks of a payment are sent."""

    copies: int = 1  # deliveries of each event, all with the same event id
    delay: float = 0.0  # seconds before each batch of events is sent
    wrong_secret: bool = False  # sign with WRONG_SECRET instead of the webhook secret
    processing_after_success: bool = False  # follow payment.succeeded with a stale processing


def webhook_plan(scenario: str, webhook_delay: float) -> WebhookPlan:
    if scenario == DUPLICATE_WEBHOOKS:
        return WebhookPlan(copies=DUPLICATE_COPIES)
    if scenario == DELAYED_WEBHOOK:
        return WebhookPlan(delay=webhook_delay)
    if scenario == BAD_SIGNATURE:
        return WebhookPlan(wrong_secret=True)
    if scenario == OUT_OF_ORDER_WEBHOOKS:
        return WebhookPlan(processing_after_success=True)
    return WebhookPlan()
