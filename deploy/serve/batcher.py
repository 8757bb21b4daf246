"""Dynamic batching: concurrent requests are merged up to ``max_batch`` samples or ``max_delay_ms``, run on one
backend thread, and split back to their callers. The queue is bounded (QueueFull when it is), every request has a
timeout, and results always go back to the caller that sent them."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class QueueFull(RuntimeError):
    pass


class BackendError(RuntimeError):
    pass


@dataclass
class _Pending:
    batch: np.ndarray
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, max_delay_ms: float = 5.0,
                 max_queue: int = 256, on_batch: Callable[[int, float], None] = lambda size, seconds: None):
        if max_batch < 1 or max_delay_ms < 0 or max_queue < 1:
            raise ValueError(f"batcher needs max_batch >= 1 (got {max_batch}), max_delay_ms >= 0 "
                             f"(got {max_delay_ms}), max_queue >= 1 (got {max_queue})")
        self.run, self.max_batch, self.max_delay = run, max_batch, max_delay_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._carry: _Pending | None = None  # taken from the queue but not fitting the last batch

    @property
    def depth(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (self._carry is not None)

    def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        if self._worker is None:
            return
        while self.depth:
            await asyncio.sleep(0.005)
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    async def submit(self, batch: np.ndarray, timeout: float) -> np.ndarray:
        """Queue ``batch`` (N, ...) and wait for its N outputs; QueueFull or TimeoutError otherwise."""
        if self._queue is None:
            raise RuntimeError("batcher is not started")
        pending = _Pending(batch, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFull(f"queue full ({self.max_queue} requests waiting)") from None
        return await asyncio.wait_for(asyncio.shield(pending.future), timeout)

    async def _next(self, timeout: float | None) -> _Pending | None:
        """The next request, or None after ``timeout`` seconds. Not asyncio.wait_for: before Python 3.12 it can
        drop a result that arrives just as the timeout fires, and a dropped request would never be answered."""
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout <= 0:
                return None
        getter = asyncio.ensure_future(self._queue.get())
        await asyncio.wait({getter}, timeout=timeout)
        if not getter.done():
            getter.cancel()
        try:
            return await getter
        except asyncio.CancelledError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            group = [first]
            size = len(first.batch)
            deadline = time.perf_counter() + self.max_delay
            while size < self.max_batch:
                item = await self._next(max(deadline - time.perf_counter(), 0.0))
                if item is None:
                    break
                # only samples of one shape and type merge; the rest waits for the next batch
                if (item.batch.shape[1:] != first.batch.shape[1:] or item.batch.dtype != first.batch.dtype
                        or size + len(item.batch) > self.max_batch):
                    self._carry = item
                    break
                group.append(item)
                size += len(item.batch)
            live = [p for p in group if not p.future.done()]  # callers that timed out are skipped
            if not live:
                continue
            inputs = live[0].batch if len(live) == 1 else np.concatenate([p.batch for p in live])
            t0 = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(None, self.run, inputs)
            except Exception as e:  # noqa: BLE001 - reported to every caller of the batch
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(BackendError(f"{type(e).__name__}: {e}"))
                continue
            self.on_batch(len(inputs), time.perf_counter() - t0)
            start = 0
            for p in live:
                n = len(p.batch)
                if not p.future.done():
                    p.future.set_result(outputs[start:start + n])
                start += n
