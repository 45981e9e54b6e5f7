"""RestartPolicy and RestartHistory: pure rules, no processes."""

from __future__ import annotations

import math
import random

import pytest

from aog_plugins import RestartPolicy
from aog_plugins.errors import ConfigurationError
from aog_plugins.process._policy import RestartHistory
from aog_plugins.transport import NO_LIMIT_BEYOND


def test_default_is_on_failure_with_a_small_budget() -> None:
    policy = RestartPolicy()
    assert policy.mode == "on-failure"
    assert policy.wants_restart(1)
    assert policy.wants_restart(-9)
    assert not policy.wants_restart(0)
    assert 0 < policy.max_restarts <= 5


def test_modes() -> None:
    assert not RestartPolicy.never().wants_restart(1)
    assert RestartPolicy.always().wants_restart(0)
    assert RestartPolicy.on_failure(max_restarts=7).max_restarts == 7


def test_policy_is_immutable_and_new_copies() -> None:
    policy = RestartPolicy()
    other = policy.new(max_restarts=9)
    assert other.max_restarts == 9
    assert policy.max_restarts != 9
    with pytest.raises(AttributeError):
        policy.max_restarts = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"mode": "sometimes"},
        {"max_restarts": -1},
        {"backoff_base": -1.0},
        {"backoff_factor": 0.5},
        {"jitter": 1.5},
        {"window": -1.0},
        # Not numbers, or numbers that no rule can be made of: a typed error naming the
        # field, not a TypeError from a comparison, nor a policy that misbehaves later
        # (a NaN backoff restarted at once, a NaN min_uptime never reset the history).
        {"max_restarts": "3"},
        {"max_restarts": None},
        {"max_restarts": True},
        {"max_restarts": 1.5},
        {"max_restarts": math.nan},
        {"window": math.nan},
        {"window": "60"},
        {"backoff_base": math.nan},
        {"backoff_base": None},
        {"backoff_max": math.nan},
        {"backoff_max": False},
        {"backoff_factor": math.nan},
        {"backoff_factor": "2"},
        {"jitter": True},
        {"jitter": "0.1"},
        {"min_uptime": math.nan},
        {"min_uptime": [10]},
    ],
)
def test_bad_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(changes))):
        RestartPolicy().new(**changes)


@pytest.mark.parametrize(
    "changes",
    [{"max_restarts": math.inf}, {"window": math.inf}, {"min_uptime": math.inf}, {"jitter": 0}],
)
def test_unbounded_values_are_accepted(changes: dict[str, object]) -> None:
    RestartPolicy().new(**changes)  # no limit, a lifetime budget, never a good run, exact


def test_backoff_of_a_long_crash_loop_stays_at_the_cap() -> None:
    # A policy with a large budget restarts a crash loop for hours: attempt 1024 made
    # 2.0**1024 overflow, and the exit handler died with the plugin stuck RUNNING.
    policy = RestartPolicy(max_restarts=10**6, jitter=0)
    assert policy.backoff(5000) == policy.backoff_max
    assert RestartPolicy(backoff_base=0, jitter=0).backoff(5000) == 0.0
    # No cap: the delay is bounded all the same (a wait of 10**30 s raised OverflowError).
    unbounded = RestartPolicy(backoff_max=math.inf, jitter=0.5)
    assert all(0 < unbounded.backoff(n) <= 2 * NO_LIMIT_BEYOND for n in (200, 5000))


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RestartPolicy(backoff_base=0.1, backoff_factor=2, backoff_max=1.0, jitter=0)
    assert [policy.backoff(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RestartPolicy(backoff_base=1.0, jitter=0.2)
    rng = random.Random(7)
    delays = [policy.backoff(0, rng) for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(set(delays)) > 100


def test_budget_counts_restarts_within_the_window() -> None:
    history = RestartHistory(RestartPolicy(max_restarts=2, window=10, jitter=0))
    assert history.budget_left(0.0)
    history.next_delay(0.0)
    assert history.budget_left(1.0)
    history.next_delay(1.0)
    assert not history.budget_left(2.0)
    assert history.budget_left(10.5)  # the first restart left the window


def test_a_long_enough_run_resets_history_and_backoff() -> None:
    history = RestartHistory(RestartPolicy(max_restarts=1, min_uptime=5, jitter=0))
    first = history.next_delay(0.0)
    history.run_ended(uptime=1.0)
    assert not history.budget_left(1.0)
    history.run_ended(uptime=6.0)
    assert history.budget_left(7.0)
    assert history.next_delay(7.0) == first
