"""Dynamic batching logic with a fake backend: merging, ordering, bounded queue, timeouts, errors."""
import asyncio
import time

import numpy as np
import pytest

from deploy.serve.batcher import BackendError, DynamicBatcher, QueueFull


def run(coro):
    return asyncio.run(coro)


def test_merges_concurrent_requests_and_returns_each_its_own():
    calls = []

    def backend(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).sum(1, keepdims=True) * np.ones((1, 2))

    async def main():
        b = DynamicBatcher(backend, max_batch=8, max_delay_ms=50)
        b.start()
        inputs = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 2, 1, 3, 1])]
        outs = await asyncio.gather(*(b.submit(x, 5) for x in inputs))
        await b.stop()
        return inputs, outs
    inputs, outs = run(main())
    for x, y in zip(inputs, outs):
        assert y.shape == (len(x), 2) and np.all(y == x.sum(1, keepdims=True))
    assert sum(calls) == 8 and max(calls) > 1


def test_max_batch_splits_and_shapes_do_not_mix():
    calls = []

    def backend(x):
        calls.append(x.shape)
        return x[:, :1]

    async def main():
        b = DynamicBatcher(backend, max_batch=4, max_delay_ms=30)
        b.start()
        xs = [np.zeros((3, 5), np.float32), np.zeros((3, 5), np.float32), np.zeros((1, 7), np.float32)]
        await asyncio.gather(*(b.submit(x, 5) for x in xs))
        await b.stop()
    run(main())
    assert all(shape[0] <= 4 for shape in calls) and {shape[1] for shape in calls} == {5, 7}


def test_full_queue_is_refused():
    def slow(x):
        time.sleep(0.3)
        return x

    async def main():
        b = DynamicBatcher(slow, max_batch=1, max_delay_ms=0, max_queue=2)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(np.zeros((1, 1)), 5)) for _ in range(6)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return results
    results = run(main())
    assert any(isinstance(r, QueueFull) for r in results)
    assert any(isinstance(r, np.ndarray) for r in results)


def test_timeout_and_backend_errors_reach_the_caller():
    def slow(x):
        time.sleep(0.5)
        return x

    def broken(x):
        raise RuntimeError("device lost")

    async def main():
        b = DynamicBatcher(slow, max_batch=2, max_delay_ms=0)
        b.start()
        with pytest.raises(asyncio.TimeoutError):
            await b.submit(np.zeros((1, 1)), 0.05)
        await b.stop()
        b = DynamicBatcher(broken, max_batch=2, max_delay_ms=10)
        b.start()
        results = await asyncio.gather(*(b.submit(np.zeros((1, 1)), 5) for _ in range(2)), return_exceptions=True)
        await b.stop()
        return results
    results = run(main())
    assert all(isinstance(r, BackendError) and "device lost" in str(r) for r in results)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_batch >= 1"):
        DynamicBatcher(lambda x: x, max_batch=0)
