"""Inputs of concurrent callers run as one batch: the GPU path's way of sharing one session across cameras.

On a GPU a session run costs about the same for one input as for several, so frames that the service's
workers hold at the same moment (several cameras) should go through together. The first caller of a batch
waits up to `wait_s` for batch-mates (or until `max_batch` rows), runs them as one, and hands every caller its
own rows; inputs of different shapes never share a batch. Whoever arrives first leads; a thread is started
only when more than one batch's worth is waiting, to lead the rest.
On a CPU batching gains nothing (the cores are already busy), so it is off unless configured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

Run = Callable[[np.ndarray], Sequence[np.ndarray]]  # a batch (N, ...) -> outputs, each (N, ...)


@dataclass(eq=False)
class _Call:
    rows: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    outputs: list[np.ndarray] | None = None
    error: BaseException | None = None


class Batcher:
    """`batcher(rows)` = `run(rows)` for each caller, the rows of concurrent callers run as one batch."""

    def __init__(self, run: Run, max_batch: int, wait_s: float):
        if max_batch < 1 or wait_s < 0:  # a programming error: configs are checked where they are read
            raise ValueError(f"max_batch must be >= 1 and wait_s >= 0, got {max_batch}, {wait_s}")
        self.run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.runs = 0  # session runs made (a batch of several callers counts once)
        self._pending: dict[tuple, list[_Call]] = {}  # by input shape (without the batch) and type
        self._cond = threading.Condition()

    def __call__(self, rows: np.ndarray) -> list[np.ndarray]:
        if self.max_batch == 1:
            self.runs += 1
            return list(self.run(rows))
        call = _Call(rows)
        key = (rows.shape[1:], rows.dtype.str)
        with self._cond:
            queue = self._pending.setdefault(key, [])
            queue.append(call)
            leader = len(queue) == 1
            if not leader:
                self._cond.notify_all()  # the leader may have its batch full now
        if not leader:
            call.done.wait()
        else:
            self._lead(key, call)
        if call.error is not None:
            raise call.error
        if call.outputs is None:  # the leader shares out outputs or an error to every call it ran
            raise RuntimeError("a batched run finished without outputs for this caller")
        return call.outputs

    def _lead(self, key: tuple, own: _Call | None) -> None:
        """Wait for batch-mates, run, share out; `own` is the leading caller's call (its thread is here)."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                rows = sum(len(c.rows) for c in self._pending[key])
                left = deadline - time.monotonic()
                if rows >= self.max_batch or left <= 0:
                    break
                self._cond.wait(left)
            queue = self._pending[key]
            batch, taken = [], 0
            while queue and (not batch or taken + len(queue[0].rows) <= self.max_batch):
                batch.append(queue.pop(0))
                taken += len(batch[-1].rows)
            if queue:  # more than one batch waits: the rest get a leader of their own
                threading.Thread(target=self._lead, args=(key, None), daemon=True).start()
            else:
                del self._pending[key]
        try:
            outputs = self.run(np.concatenate([c.rows for c in batch]) if len(batch) > 1 else batch[0].rows)
            with self._cond:
                self.runs += 1
            start = 0
            for member in batch:
                end = start + len(member.rows)
                member.outputs = [output[start:end] for output in outputs]
                start = end
        except BaseException as exc:  # every member of the batch hears why its run failed
            for member in batch:
                member.error = exc
        finally:
            for member in batch:
                if member is not own:
                    member.done.set()
