"""One bounded pool of worker processes for the CPU-heavy part of every request (parsing JSON or binary tensors,
decoding images), so the event loop only moves bytes and answers health checks while the pool works. Processes,
not threads: json.loads holds the GIL for the whole parse, so a thread would still stall the loop."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable


class WorkerCrashed(RuntimeError):
    """A worker process died on a request (the pool is replaced; the request gets a 500)."""


class WorkerPool:
    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1")
        self.workers = workers
        self._executor = self._new_executor()
        self._slots: asyncio.Semaphore | None = None  # at most `workers` requests in the pool; the rest wait here

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: the server process has ONNX Runtime and uvicorn threads, which fork would copy in a broken state
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def warm_up(self) -> None:
        """Blocking: start every worker process and import what the work needs (done before readiness)."""
        list(self._executor.map(_import_work_modules, range(self.workers)))

    async def run(self, fn: Callable, *args):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        async with self._slots:
            executor = self._executor
            try:
                return await asyncio.wrap_future(executor.submit(fn, *args))
            except BrokenProcessPool:
                if executor is self._executor:
                    self._executor = self._new_executor()
                    executor.shutdown(wait=False, cancel_futures=True)
                raise WorkerCrashed("a worker process died while handling this request") from None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _import_work_modules(_: int) -> int:
    import PIL.Image  # noqa: F401 - loaded once per worker, not on the first upload

    from . import images, protocol  # noqa: F401
    return os.getpid()
