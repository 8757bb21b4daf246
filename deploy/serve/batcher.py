"""Dynamic batching: concurrent requests are merged up to ``max_batch`` samples or ``max_delay_ms``, run on one
backend thread, and split back to their callers. The queue is bounded (QueueFull when it is), every request has a
timeout, and results always go back to the caller that sent them. A request whose caller gave up (timeout, client
gone: the awaiting task is cancelled) leaves the queue at once and is never computed, and one that would reach its
deadline during the backend call (at the recent batch time) is answered with a timeout instead of being run: under
overload the head of a FIFO queue is always about to expire, and computing it would waste the backend."""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class QueueFull(RuntimeError):
    pass


class BackendError(RuntimeError):
    pass


@dataclass
class _Pending:
    batch: np.ndarray
    future: asyncio.Future
    deadline: float  # event-loop time

    def fits_with(self, first: "_Pending") -> bool:
        return self.batch.shape[1:] == first.batch.shape[1:] and self.batch.dtype == first.batch.dtype


def _ignore(computed: int, delivered: int, seconds: float) -> None:
    pass


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, max_delay_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable[[int, int, float], None] = _ignore):
        """``on_batch(computed, delivered, seconds)``: samples run by the backend, samples handed to callers that
        were still waiting, backend time."""
        if max_batch < 1 or max_delay_ms < 0 or max_queue < 1:
            raise ValueError(f"batcher needs max_batch >= 1 (got {max_batch}), max_delay_ms >= 0 "
                             f"(got {max_delay_ms}), max_queue >= 1 (got {max_queue})")
        self.run, self.max_batch, self.max_delay = run, max_batch, max_delay_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self._queue: deque[_Pending] = deque()
        self._arrived: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set while nothing is queued or running
        self._worker: asyncio.Task | None = None
        self._backend_thread = ThreadPoolExecutor(1, thread_name_prefix="backend")
        self.expected_batch_s = 0.0  # moving average of the backend time per batch

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._arrived, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        if self._worker is None:
            return
        await self._idle.wait()
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None
        self._backend_thread.shutdown(wait=True)

    async def submit(self, batch: np.ndarray, timeout: float) -> np.ndarray:
        """Queue ``batch`` (N, ...) and wait for its N outputs; QueueFull or TimeoutError otherwise. Cancelling
        the awaiting task (or the timeout) takes the request out of the queue."""
        if self._worker is None:
            raise RuntimeError("batcher is not started")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)")
        loop = asyncio.get_running_loop()
        pending = _Pending(batch, loop.create_future(), loop.time() + timeout)
        self._queue.append(pending)
        self._idle.clear()
        self._arrived.set()
        try:
            return await asyncio.wait_for(pending.future, timeout)  # cancels pending.future on timeout
        finally:
            if not pending.future.done():
                pending.future.cancel()
            try:
                self._queue.remove(pending)
            except ValueError:
                pass  # already taken by the worker, which skips cancelled requests

    async def _wait_for_arrival(self, timeout: float | None) -> bool:
        self._arrived.clear()
        if timeout is None:
            await self._arrived.wait()
            return True
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _collect(self) -> list[_Pending]:
        """The next batch: the queue's head plus what follows it and fits, waiting up to max_delay to fill up."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            self._idle.set()
            await self._wait_for_arrival(None)
        group = [self._queue.popleft()]
        size = len(group[0].batch)
        deadline = loop.time() + self.max_delay
        while size < self.max_batch:
            if not self._queue:
                if not await self._wait_for_arrival(max(deadline - loop.time(), 0.0)):
                    break
                continue
            head = self._queue[0]
            # only samples of one shape and type merge; the rest waits for the next batch
            if not head.fits_with(group[0]) or size + len(head.batch) > self.max_batch:
                break
            group.append(self._queue.popleft())
            size += len(head.batch)
        return group

    def _still_worth_running(self, pending: _Pending, now: float) -> bool:
        if pending.future.done():  # the caller gave up
            return False
        if pending.deadline - now < self.expected_batch_s:
            pending.future.set_exception(asyncio.TimeoutError())
            # the estimate is only refreshed by batches that run: it shrinks a little with every refusal, so one
            # slow batch cannot make the server refuse all later work (it would never run a batch to learn otherwise)
            self.expected_batch_s *= 0.9
            return False
        return True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._collect()
            live = [p for p in group if self._still_worth_running(p, loop.time())]
            if not live:
                continue
            inputs = live[0].batch if len(live) == 1 else np.concatenate([p.batch for p in live])
            t0 = loop.time()
            try:
                outputs = await loop.run_in_executor(self._backend_thread, self.run, inputs)
            except Exception as e:  # noqa: BLE001 - reported to every caller of the batch
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(BackendError(f"{type(e).__name__}: {e}"))
                continue
            delivered, start = 0, 0
            for p in live:
                n = len(p.batch)
                if not p.future.done():
                    p.future.set_result(outputs[start:start + n])
                    delivered += n
                start += n
            seconds = loop.time() - t0
            self.expected_batch_s = seconds if not self.expected_batch_s else 0.7 * self.expected_batch_s + 0.3 * seconds
            self.on_batch(len(inputs), delivered, seconds)
