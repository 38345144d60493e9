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


def test_stage_costs_follow_observations() -> None:
    costs = StageCosts(alpha=0.5)
    assert costs.estimate("detect") == 0.0
    costs.observe("detect", 0.1)
    costs.observe("detect", 0.3)
    assert costs.estimate("detect") == pytest.approx(0.2)


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
