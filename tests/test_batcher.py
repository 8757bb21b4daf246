"""Dynamic batching logic with a fake backend: merging, ordering, bounded queue, timeouts, cancellation, errors.
No test depends on how fast the machine is: the backend blocks on events the test controls, and windows that
would need a timing are set so the outcome does not depend on one (0, or longer than any test)."""
import asyncio
import threading

import numpy as np
import pytest

from deploy.serve.batcher import BackendError, DynamicBatcher, QueueFull

FOREVER_MS = 3_600_000  # a batching window no test waits for: batches close by size, never by time


class GatedBackend:
    """Records every batch; each call waits until the test opens the gate (a threading.Event: the backend runs
    on the batcher's thread)."""

    def __init__(self, fn=lambda x: x.reshape(len(x), -1).sum(1, keepdims=True), open_gate=False):
        self.fn, self.calls, self.gate, self.entered = fn, [], threading.Event(), threading.Event()
        if open_gate:
            self.gate.set()

    def __call__(self, x):
        self.calls.append(x.copy())
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("test never opened the gate")
        return self.fn(x)


async def until(predicate):
    while not predicate():
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(coro)


def test_merges_queued_requests_and_returns_each_its_own():
    backend = GatedBackend()

    async def main():
        b = DynamicBatcher(backend, max_batch=8, max_delay_ms=FOREVER_MS)
        b.start()
        blocker = asyncio.ensure_future(b.submit(np.full((8, 3), -1, np.float32), 60))  # fills one batch
        await asyncio.to_thread(backend.entered.wait, 60)
        inputs = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 2, 1, 3, 1])]
        tasks = [asyncio.ensure_future(b.submit(x, 60)) for x in inputs]
        await until(lambda: b.depth == len(inputs))  # all queued while the backend is busy
        backend.gate.set()
        outs = await asyncio.gather(*tasks)
        await blocker
        await b.stop()
        return inputs, outs
    inputs, outs = run(main())
    for x, y in zip(inputs, outs):
        assert y.shape == (len(x), 1) and np.all(y[:, 0] == x.sum(1))
    assert [len(c) for c in backend.calls] == [8, 8]  # the five requests (8 samples) ran as one batch, in order
    assert np.array_equal(backend.calls[1][:, 0], np.concatenate(inputs)[:, 0])


def test_no_window_runs_what_is_queued_at_once():
    backend = GatedBackend(open_gate=True)

    async def main():
        b = DynamicBatcher(backend, max_batch=8, max_delay_ms=0)
        b.start()
        y = await b.submit(np.ones((1, 3), np.float32), 60)
        await b.stop()
        return y
    assert run(main()).tolist() == [[3.0]] and [len(c) for c in backend.calls] == [1]


def test_max_batch_splits_and_shapes_do_not_mix():
    backend = GatedBackend(lambda x: x[:, :1])

    async def main():
        b = DynamicBatcher(backend, max_batch=4, max_delay_ms=0)  # all is queued before the backend is free
        b.start()
        first = asyncio.ensure_future(b.submit(np.zeros((4, 5), np.float32), 60))
        await asyncio.to_thread(backend.entered.wait, 60)
        xs = [np.zeros((3, 5), np.float32), np.zeros((1, 7), np.float32), np.zeros((3, 5), np.float32),
              np.zeros((1, 5), np.float16)]
        tasks = [asyncio.ensure_future(b.submit(x, 60)) for x in xs]
        await until(lambda: b.depth == len(xs))
        backend.gate.set()
        await asyncio.gather(first, *tasks)
        await b.stop()
    run(main())
    shapes = [(c.shape, c.dtype) for c in backend.calls]
    # queue order is kept: a head that does not fit closes the batch; nothing merges across shape or dtype
    assert shapes == [((4, 5), np.float32), ((3, 5), np.float32), ((1, 7), np.float32), ((3, 5), np.float32),
                      ((1, 5), np.float16)]


def test_full_queue_is_refused():
    backend = GatedBackend()

    async def main():
        b = DynamicBatcher(backend, max_batch=1, max_delay_ms=0, max_queue=2)
        b.start()
        running = asyncio.ensure_future(b.submit(np.zeros((1, 1)), 60))
        await asyncio.to_thread(backend.entered.wait, 60)
        queued = [asyncio.ensure_future(b.submit(np.zeros((1, 1)), 60)) for _ in range(2)]
        await until(lambda: b.depth == 2)
        with pytest.raises(QueueFull, match="2 requests waiting"):
            await b.submit(np.zeros((1, 1)), 60)
        backend.gate.set()
        results = await asyncio.gather(running, *queued)
        await b.stop()
        return results
    assert len(run(main())) == 3


def test_timed_out_and_cancelled_requests_leave_the_queue_and_are_never_computed():
    backend = GatedBackend()
    computed = []

    async def main():
        b = DynamicBatcher(backend, max_batch=1, max_delay_ms=0,
                           on_batch=lambda n, delivered, s: computed.append((n, delivered)))
        b.start()
        running = asyncio.ensure_future(b.submit(np.full((1, 1), 1.0), 60))
        await asyncio.to_thread(backend.entered.wait, 60)
        with pytest.raises(asyncio.TimeoutError):  # the backend is held, so this times out whatever the load
            await b.submit(np.full((1, 1), 2.0), 0.01)
        cancelled = asyncio.ensure_future(b.submit(np.full((1, 1), 3.0), 60))
        await until(lambda: b.depth == 1)
        cancelled.cancel()  # what a client disconnect does
        await asyncio.gather(cancelled, return_exceptions=True)
        assert b.depth == 0  # both left the queue before the backend was free again
        kept = asyncio.ensure_future(b.submit(np.full((1, 1), 4.0), 60))
        backend.gate.set()
        results = await asyncio.gather(running, kept)
        await b.stop()
        return results
    results = run(main())
    assert [r.tolist() for r in results] == [[[1.0]], [[4.0]]]
    assert [c[0, 0] for c in backend.calls] == [1.0, 4.0]  # 2 (timed out) and 3 (cancelled) were never run
    assert computed == [(1, 1), (1, 1)]


def test_a_request_cancelled_while_its_batch_fills_is_not_computed():
    backend = GatedBackend(open_gate=True)

    async def main():
        b = DynamicBatcher(backend, max_batch=2, max_delay_ms=FOREVER_MS)
        b.start()
        gone = asyncio.ensure_future(b.submit(np.full((1, 1), 1.0), 60))
        await until(lambda: b.depth == 1)
        await until(lambda: b.depth == 0)  # taken into a batch that waits for a second sample
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        y = await b.submit(np.full((1, 1), 2.0), 60)  # fills the batch
        await b.stop()
        return y
    assert run(main()).tolist() == [[2.0]]
    assert [c[:, 0].tolist() for c in backend.calls] == [[2.0]]


def test_a_request_that_cannot_finish_before_its_deadline_is_answered_without_computing():
    backend = GatedBackend(open_gate=True)

    async def main():
        b = DynamicBatcher(backend, max_batch=1, max_delay_ms=0)
        b.start()
        b.expected_batch_s = 120.0  # as if recent batches took two minutes
        with pytest.raises(asyncio.TimeoutError):
            await b.submit(np.zeros((1, 1)), 60)
        b.expected_batch_s = 0.0
        y = await b.submit(np.ones((1, 1)), 60)
        await b.stop()
        return y
    assert run(main()).tolist() == [[1.0]] and [c.tolist() for c in backend.calls] == [[[1.0]]]


def test_one_slow_batch_does_not_make_the_batcher_refuse_all_later_work():
    backend = GatedBackend(open_gate=True)

    async def main():
        b = DynamicBatcher(backend, max_batch=1, max_delay_ms=0)
        b.start()
        b.expected_batch_s = 60.0  # one outlier batch of a minute, timeouts of a second
        outcomes = []
        for i in range(64):
            try:
                outcomes.append((await b.submit(np.full((1, 1), i, np.float32), 1)).item())
            except asyncio.TimeoutError:
                outcomes.append("timeout")
        await b.stop()
        return outcomes
    outcomes = run(main())
    assert outcomes[0] == "timeout" and outcomes[-1] == 63.0, outcomes  # refused while the estimate says so, then run
    assert len(backend.calls) == sum(o != "timeout" for o in outcomes)  # refused requests were never computed


def test_backend_errors_reach_every_caller_of_the_batch():
    def broken(x):
        raise RuntimeError("device lost")

    async def main():
        b = DynamicBatcher(broken, max_batch=2, max_delay_ms=FOREVER_MS)
        b.start()
        results = await asyncio.gather(*(b.submit(np.zeros((1, 1)), 60) for _ in range(2)), return_exceptions=True)
        await b.stop()
        return results
    results = run(main())
    assert len(results) == 2 and all(isinstance(r, BackendError) and "device lost" in str(r) for r in results)


def test_stop_finishes_what_is_queued():
    backend = GatedBackend()

    async def main():
        b = DynamicBatcher(backend, max_batch=1, max_delay_ms=0)
        b.start()
        tasks = [asyncio.ensure_future(b.submit(np.full((1, 1), float(i)), 60)) for i in range(3)]
        await asyncio.to_thread(backend.entered.wait, 60)
        stopping = asyncio.ensure_future(b.stop())
        backend.gate.set()
        await stopping
        return [t.result().item() for t in tasks]
    assert run(main()) == [0.0, 1.0, 2.0]


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_batch >= 1"):
        DynamicBatcher(lambda x: x, max_batch=0)
