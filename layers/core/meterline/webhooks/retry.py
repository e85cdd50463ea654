"""When to try a failed webhook again. Retries ride on SQS DelaySeconds, hence whole seconds, at most 900."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from meterline.settings import number_setting

SQS_MAX_DELAY_SECONDS = 900
_RANDOM = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 30.0
    max_seconds: float = 900.0
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        default = cls()
        at_least_1, positive = ("at least 1", lambda v: v >= 1), ("more than 0", lambda v: v > 0)
        prefix = "METERLINE_WEBHOOK_"
        return cls(
            max_attempts=number_setting(f"{prefix}MAX_ATTEMPTS", int, default.max_attempts, *at_least_1),
            base_seconds=number_setting(f"{prefix}BACKOFF_BASE_SECONDS", float, default.base_seconds, *positive),
            max_seconds=number_setting(f"{prefix}BACKOFF_MAX_SECONDS", float, default.max_seconds, *at_least_1),
            timeout_seconds=number_setting(f"{prefix}TIMEOUT_SECONDS", float, default.timeout_seconds, *positive),
        )

    def delay_seconds(self, attempt: int, rng: random.Random | None = None) -> int:
        """Seconds to wait before attempt `attempt + 1`, after `attempt` (>= 1) failed attempts.

        Exponential backoff with "equal jitter": half of min(cap, base * 2**(attempt-1)) is fixed and
        the other half random, so retries of many deliveries spread out yet never come sooner than
        half the backoff. Until the cap is reached each delay is at least the previous one."""
        cap = min(self.max_seconds, SQS_MAX_DELAY_SECONDS)
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * base is far past any cap; bigger would overflow
        backoff = min(cap, self.base_seconds * 2**exponent)
        delay = math.ceil(backoff / 2 + (rng or _RANDOM).uniform(0, backoff / 2))
        return max(1, min(delay, math.floor(cap)))

    def gives_up_after(self, attempt: int) -> bool:
        """True when `attempt` attempts have been made and no more are allowed."""
        return attempt >= self.max_attempts
