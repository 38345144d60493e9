"""Budgets, the newest-frame slot and the bounded worker pool, with real threads."""

from __future__ import annotations

import threading
import time

import pytest

from gatematch.errors import BudgetExceededError
from gatematch.service.flow import Budget, LatestSlot, StageCosts, WorkerPool
from gatematch.service.telemetry import Telemetry


def test_budget_is_the_tighter_of_config_and_deadline() -> None:
    assert Budget.start(0.5).seconds == 0.5
    assert Budget.start(0.5, time_remaining_s=0.2, margin_s=0.05).seconds == pytest.approx(0.15)
    assert Budget.start(0.5, time_remaining_s=10.0).seconds == 0.5
    assert Budget.start(0.5, time_remaining_s=0.01, margin_s=0.05).seconds == 0.0


def test_require_refuses_a_stage_that_cannot_finish() -> None:
    budget = Budget.start(0.2)
    budget.require("detect", 0.05)
    with pytest.raises(BudgetExceededError, match="embed not started"):
        budget.require("embed", 0.5)
    with pytest.raises(BudgetExceededError):
        Budget.start(0.0).require("detect")


class Clock:
    """A hand-driven monotonic clock, so decay and staleness are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stage_costs_follow_observations() -> None:
    costs = StageCosts(alpha=0.5, clock=Clock())
    assert costs.estimate("detect") == 0.0
    costs.observe("detect", 0.1)
    costs.observe("detect", 0.3)
    assert costs.estimate("detect") == pytest.approx(0.2)


def test_one_slow_input_cannot_lock_a_stage_out() -> None:
    """Issue 10: one 6 s decode moved the average past the 500 ms budget, and the stage never ran again."""
    clock = Clock()
    costs = StageCosts(clock=clock)
    for _ in range(20):
        costs.observe("decode", 0.002)
        clock.now += 0.1
    costs.observe("decode", 6.0)
    assert costs.estimate("decode") < 0.005  # an outlier is a nudge, not a lock
    for _ in range(25):  # a real slow-down is followed within a few dozen frames
        costs.observe("decode", 0.2)
        clock.now += 0.1
    assert costs.estimate("decode") == pytest.approx(0.2, rel=0.05)


def test_cost_is_per_unit_of_input() -> None:
    costs = StageCosts(clock=Clock())
    costs.observe("decode", 0.8, units=8.3)  # a 4K frame
    assert costs.estimate("decode", units=0.3) == pytest.approx(0.8 / 8.3 * 0.3)
    assert costs.estimate("decode", units=0.0) == pytest.approx(0.8 / 8.3 * costs.min_units)


def test_an_estimate_decays_and_a_stale_one_lets_a_frame_through() -> None:
    clock = Clock()
    costs = StageCosts(half_life_s=10.0, stale_s=5.0, clock=clock)
    costs.observe("analyze", 2.0)  # the first observation is taken as it is, however slow
    clock.now += 4.0
    assert costs.estimate("analyze") == pytest.approx(2.0 * 0.5**0.4)
    clock.now += 2.0  # 6 s without an observation: stale
    assert costs.estimate("analyze") == 0.0  # one frame goes through to measure the stage again...
    assert costs.estimate("analyze") > 1.0  # ...not every frame at once
    costs.observe("analyze", 0.03)  # and what it measured replaces the stale estimate
    assert costs.estimate("analyze") == pytest.approx(0.03)
    clock.now += 5.5
    assert costs.estimate("analyze") == 0.0  # the next stale period lets the next frame through


def test_latest_frame_wins_and_drops_are_counted() -> None:
    slot: LatestSlot[int] = LatestSlot()
    taken: list[int] = []

    def consume() -> None:
        while (item := slot.take(timeout=5)) is not None:
            taken.append(item)
            time.sleep(0.01)  # a slow matcher

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(300):
        slot.put(i)
        time.sleep(0.0005)
    time.sleep(0.05)
    slot.close()
    consumer.join(5)
    assert taken == sorted(taken) and taken[-1] == 299  # in order, and the newest frame is never lost
    assert slot.dropped == 300 - len(taken) > 0
    assert slot.take(timeout=0) is None


def test_put_reports_replacement() -> None:
    slot: LatestSlot[str] = LatestSlot()
    assert slot.put("a") is False
    assert slot.put("b") is True
    assert slot.take(0) == "b" and slot.dropped == 1


def test_pool_returns_results_and_abandons_late_work() -> None:
    pool = WorkerPool(workers=2, max_pending=4)
    try:
        assert pool.run(lambda budget: budget.seconds * 2, Budget.start(1.0)) == 2.0
        started = time.monotonic()
        with pytest.raises(BudgetExceededError, match="abandoned"):
            pool.run(lambda budget: time.sleep(2.0), Budget.start(0.1))
        assert time.monotonic() - started < 1.0  # the caller did not wait for the late result
    finally:
        pool.shutdown(wait=False)


def test_work_whose_budget_ends_in_the_queue_never_starts() -> None:
    metrics = Telemetry()
    pool = WorkerPool(workers=1, max_pending=2, telemetry=metrics)
    release = threading.Event()
    ran = threading.Event()
    try:
        blocker = pool.submit(lambda budget: release.wait(5), Budget.start(10.0))
        late = pool.submit(lambda budget: ran.set(), Budget.start(0.05))
        assert metrics.registry.get_sample_value("gatematch_queue_depth") >= 1
        with pytest.raises(BudgetExceededError, match="busy"):
            pool.submit(lambda budget: None, Budget.start(1.0))
            pool.submit(lambda budget: None, Budget.start(1.0))
        time.sleep(0.1)
        release.set()
        assert blocker.result(5) is True
        with pytest.raises(BudgetExceededError, match="inference not started"):
            late.result(5)
        assert not ran.is_set()
    finally:
        release.set()
        pool.shutdown()
