"""RestartPolicy: when a dead plugin is started again, how soon, and when to give up.

An immutable value in the style of urllib3's ``Retry``: build variants with :meth:`new`
or the ``never()``/``always()``/``on_failure()`` constructors; the supervisor keeps the
mutable history (:class:`RestartHistory`), the policy only answers questions.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

from aog_plugins.errors import ConfigurationError
from aog_plugins.transport import NO_LIMIT_BEYOND, seconds

__all__ = ["RestartHistory", "RestartPolicy"]

Mode = Literal["never", "on-failure", "always"]


@dataclass(frozen=True)
class RestartPolicy:
    """Restart rules for a supervised plugin.

    ``mode``: ``"never"``; ``"on-failure"`` (a non-zero exit or a signal; default);
    ``"always"`` (also after a clean exit 0). Backoff before restart *n* (0-based) is
    ``min(backoff_max, backoff_base * backoff_factor**n)`` with +/- ``jitter`` (a fraction).
    More than ``max_restarts`` restarts within ``window`` seconds make the plugin FATAL.
    A run that lasted ``min_uptime`` seconds counts as a successful start: the failure
    history (and so the backoff) starts over.
    """

    mode: Mode = "on-failure"
    max_restarts: int = 3
    window: float = 60.0
    backoff_base: float = 0.2
    backoff_factor: float = 2.0
    backoff_max: float = 10.0
    jitter: float = 0.2
    min_uptime: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in ("never", "on-failure", "always"):
            raise ConfigurationError(
                f"mode must be 'never', 'on-failure' or 'always', got {self.mode!r}"
            )
        # Each field's type too: a str or None failed a comparison with a bare TypeError,
        # and NaN passed every check (a NaN backoff then restarted at once, a NaN
        # min_uptime never counted a run as good).
        count = self.max_restarts
        if (
            isinstance(count, bool)
            or not isinstance(count, (int, float))
            or not (count == math.inf or (count >= 0 and float(count).is_integer()))
        ):
            raise ConfigurationError(
                f"max_restarts must be a whole number >= 0 (math.inf: no limit), got {count!r}"
            )
        for name in ("window", "backoff_base", "backoff_max", "min_uptime"):
            seconds(name, getattr(self, name), finite=False, zero=True)
        factor = self.backoff_factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor >= 1:
            raise ConfigurationError(f"backoff_factor must be a number >= 1, got {factor!r}")
        jitter = self.jitter
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
            raise ConfigurationError(f"jitter must be a fraction within 0..1, got {jitter!r}")

    @classmethod
    def never(cls) -> RestartPolicy:
        """No restarts: a dead plugin stays EXITED (go-plugin's behaviour)."""
        return cls(mode="never")

    @classmethod
    def on_failure(cls, **changes: float | int) -> RestartPolicy:
        return dataclasses.replace(cls(mode="on-failure"), **changes)  # type: ignore[arg-type]

    @classmethod
    def always(cls, **changes: float | int) -> RestartPolicy:
        return dataclasses.replace(cls(mode="always"), **changes)  # type: ignore[arg-type]

    def new(self, **changes: object) -> RestartPolicy:
        """A copy with some fields changed, like ``Retry.new``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def wants_restart(self, exit_code: int | None) -> bool:
        """Whether this exit calls for a restart at all (the budget is checked apart)."""
        if self.mode == "never":
            return False
        if self.mode == "always":
            return True
        return exit_code != 0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before restart number ``attempt`` (0-based), with jitter."""
        if self.backoff_base == 0:
            delay = 0.0
        else:
            try:
                grown = self.backoff_base * self.backoff_factor**attempt
            except OverflowError:  # 2.0**1024: a crash loop of hours under a large budget
                grown = math.inf
            # Bounded even with no cap (backoff_max=inf): a longer wait overflows a timeout.
            delay = min(self.backoff_max, grown, NO_LIMIT_BEYOND)
        if self.jitter:
            spread = delay * self.jitter
            delay += (rng or random).uniform(-spread, spread)
        return max(delay, 0.0)


class RestartHistory:
    """The supervisor's record of recent restarts, judged by a :class:`RestartPolicy`."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._restarts: deque[float] = deque()
        self.attempt = 0

    def run_ended(self, uptime: float) -> None:
        """A run ended after ``uptime`` seconds; a long enough run resets the history."""
        if uptime >= self.policy.min_uptime:
            self._restarts.clear()
            self.attempt = 0

    def budget_left(self, now: float) -> bool:
        """Whether one more restart fits the budget (N within the window)."""
        while self._restarts and now - self._restarts[0] > self.policy.window:
            self._restarts.popleft()
        return len(self._restarts) < self.policy.max_restarts

    def next_delay(self, now: float) -> float:
        """Record a restart and return the delay before it."""
        self._restarts.append(now)
        delay = self.policy.backoff(self.attempt)
        self.attempt += 1
        return delay
