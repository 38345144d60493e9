"""Flow control: latency budgets, the newest-frame slot of a stream, and the bounded inference pool.

A camera sends frames faster than they can be matched. Queuing them would make every answer later than the
last, so each stream keeps one slot: a newer frame replaces an unprocessed older one (counted as dropped).
Inference runs on one pool sized to the cores, whatever the number of streams; a task whose budget is spent
before a worker picks it up is not started, and a caller never waits past its budget for a result.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Generic, TypeVar

from gatematch.errors import BudgetExceededError, TimeLimitError
from gatematch.service.telemetry import Telemetry

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """A monotonic deadline: min(configured budget, gRPC time remaining - reply margin)."""

    started: float
    seconds: float

    @classmethod
    def start(
        cls,
        configured_s: float,
        time_remaining_s: float | None = None,
        margin_s: float = 0.0,
        started: float | None = None,
    ) -> Budget:
        """A budget counted from `started` (monotonic; default now), e.g. when the frame arrived."""
        now = time.monotonic()
        started = now if started is None else min(started, now)
        seconds = configured_s
        if time_remaining_s is not None:  # the deadline is measured from now, the budget from `started`
            seconds = min(configured_s, now - started + time_remaining_s - margin_s)
        return cls(started, max(seconds, 0.0))

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def require(self, stage: str, estimate_s: float = 0.0) -> None:
        """Refuse to start `stage` when it cannot finish in what is left (estimate from StageCosts)."""
        left = self.deadline - time.monotonic()
        if left <= 0 or left < estimate_s:
            raise BudgetExceededError(
                f"{stage} not started: {max(left, 0) * 1000:.0f} ms left of {self.seconds * 1000:.0f} ms, "
                f"it takes about {estimate_s * 1000:.0f} ms"
            )


@dataclass
class _Cost:
    rate: float  # seconds per unit of input, as last updated
    observed: float  # clock time of the last observation
    probed: float = float("-inf")  # clock time a stale estimate last let a frame through


class StageCosts:
    """Running cost of each stage per unit of input, shared by all requests: work that cannot finish in what is
    left of a budget is not started.

    Units are what the cost grows with: megapixels for decoding, one call for the other stages. An estimate must
    never lock its stage out (issue 10: one bomb frame took seconds to decode, the average jumped past the
    budget and, since a refused stage never runs again to correct it, every later frame was refused until a
    restart). So one observation counts at most `max_step` times the estimate (an outlier is a nudge; a real
    slow-down is followed within a few dozen frames), an estimate decays with the time since its last
    observation (half-life `half_life_s`), and once it is `stale_s` old it lets one frame through (one per
    `stale_s`) whose measurement replaces it. Overestimating refuses good frames; underestimating only starts
    work that the worker pool then abandons at the budget, so the estimate errs low.
    """

    def __init__(
        self,
        alpha: float = 0.2,
        max_step: float = 4.0,
        half_life_s: float = 30.0,
        stale_s: float = 5.0,
        min_units: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.alpha = alpha
        self.max_step = max_step
        self.half_life_s = half_life_s
        self.stale_s = stale_s
        self.min_units = min_units  # below it a call's fixed cost dominates (0.01 megapixels = 100 x 100)
        self._clock = clock
        self._costs: dict[str, _Cost] = {}
        self._lock = threading.Lock()

    def _rate(self, cost: _Cost, now: float) -> float:
        return cost.rate * 0.5 ** ((now - cost.observed) / self.half_life_s)

    def observe(self, stage: str, seconds: float, units: float = 1.0) -> None:
        rate = seconds / max(units, self.min_units)
        with self._lock:
            now = self._clock()
            cost = self._costs.get(stage)
            if cost is None or now - cost.observed > self.stale_s:
                self._costs[stage] = _Cost(rate, now, cost.probed if cost else float("-inf"))
                return
            previous = self._rate(cost, now)
            cost.rate = previous + self.alpha * (min(rate, previous * self.max_step) - previous)
            cost.observed = now

    def estimate(self, stage: str, units: float = 1.0) -> float:
        """Seconds `stage` should take for `units` of input; 0 until it has run once, and 0 for one frame per
        `stale_s` while the estimate is stale, so that frame measures the stage again."""
        with self._lock:
            now = self._clock()
            cost = self._costs.get(stage)
            if cost is None:
                return 0.0
            if now - cost.observed > self.stale_s and now - cost.probed > self.stale_s:
                cost.probed = now
                return 0.0
            return self._rate(cost, now) * max(units, self.min_units)


class LatestSlot(Generic[T]):
    """Holds at most one item; `put` replaces an untaken one (a drop). Memory stays flat under any overload."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._full = False
        self._closed = False
        self.dropped = 0
        self.last_put = time.monotonic()  # when an item last arrived (a stream's idle time counts from it)
        self._cond = threading.Condition()

    def put(self, item: T) -> bool:
        """Store `item`; True if it replaced one that was never taken."""
        with self._cond:
            self.last_put = time.monotonic()
            replaced = self._full
            self.dropped += replaced
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> T | None:
        """The newest item, waiting up to `timeout`; None on timeout or once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WorkerPool:
    """A fixed number of inference threads and a bounded backlog, with budget-aware submission."""

    def __init__(self, workers: int, max_pending: int, telemetry: Telemetry | None = None):
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="gatematch-infer")
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()
        self._telemetry = telemetry

    def _depth(self, change: int) -> None:
        with self._lock:
            self._pending += change
            if self._telemetry is not None:
                self._telemetry.queue_depth.set(self._pending)

    def submit(self, fn: Callable[[Budget], T], budget: Budget) -> Future[T]:
        """Queue fn(budget); refused at once when the backlog is full, skipped if the budget ends in the queue."""
        with self._lock:
            if self._pending >= self._max_pending:
                raise BudgetExceededError(f"server busy: {self._pending} tasks already wait for a worker")
        self._depth(+1)

        def task() -> T:
            self._depth(-1)
            budget.require("inference")
            return fn(budget)

        try:
            return self._executor.submit(task)
        except RuntimeError:
            self._depth(-1)
            raise

    def run(self, fn: Callable[[Budget], T], budget: Budget, abandon: Callable[[], bool] = lambda: True) -> T:
        """fn(budget) on a worker; BudgetExceededError when the budget ends first (the result is then discarded).

        A running task cannot be stopped, so `abandon` is asked when the budget ends: False means the task has
        already committed to changing shared state in time, and its short remainder is awaited instead.
        """
        future = self.submit(fn, budget)
        try:
            return future.result(timeout=budget.remaining())
        except FutureTimeout:
            if future.cancel():
                self._depth(-1)
            elif not abandon():
                return future.result()
            raise BudgetExceededError(f"abandoned after {budget.seconds * 1000:.0f} ms budget") from None

    def shutdown(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=True)


_END = object()


def guarded(items: Iterator[T], idle_s: float, max_s: float, what: str) -> Iterator[T]:
    """A client's message stream that may not go quiet for `idle_s` nor last past `max_s` (TimeLimitError).

    A reader thread takes the messages, one at a time (the next is only read once this one was taken), so a
    client that stops sending cannot hold a server thread and its slot for ever.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=1)
    done = threading.Event()

    def hand(item: object) -> None:
        while not done.is_set():
            with contextlib.suppress(queue.Full):
                handoff.put(item, timeout=0.5)
                return

    def read() -> None:
        try:
            for item in items:
                hand(item)
                if done.is_set():
                    return
            hand(_END)
        except BaseException as exc:  # the client went away: hand the reason over
            hand(exc)

    threading.Thread(target=read, name="gatematch-call-reader", daemon=True).start()
    deadline = time.monotonic() + max_s
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                item = handoff.get(timeout=max(min(idle_s, left), 0.0))
            except queue.Empty:
                limit = f"sent nothing for {idle_s:g} s" if left > idle_s else f"took longer than {max_s:g} s"
                raise TimeLimitError(f"{what} {limit}: it was refused and nothing was written") from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        done.set()  # the reader stops at its next message (or when the call ends and its iterator fails)
