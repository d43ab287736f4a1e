"""Batching across concurrent requests: one queue in front of the engine.

kserve's Python ``ModelServer`` has no batcher of its own (KServe's batcher is the agent sidecar
on Kubernetes, ``spec.predictor.batcher``), so the server batches here, on the event loop.
The batcher never waits for a batch to fill while the engine is idle unless told to
(``max_wait_s``, default 0): a request that finds the engine free runs at once (no added latency
at concurrency 1), requests that arrive while a batch runs queue up and go together as the next
batch, up to ``max_batch`` images. ``workers`` batches may run at the same time (each on its own
thread; the engine's ``run`` is thread-safe).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["Batcher"]

Feed = dict[str, np.ndarray]
Outputs = tuple[np.ndarray, ...]


@dataclass
class _Item:
    count: int
    make_feed: Callable[[], Feed]
    future: asyncio.Future[Outputs]


class Batcher:
    """Concatenate the feeds of concurrent requests along the batch axis and run them once.

    Args:
        run: the engine call, ``feed -> outputs`` (each output's first axis is the batch).
        max_batch: at most this many images per engine call (a larger request runs alone).
        max_wait_s: how long to wait for more requests once one is there (0: only take what
            is already queued).
        workers: engine calls that may run at the same time.
    """

    def __init__(
        self, run: Callable[[Feed], Outputs], *, max_batch: int, max_wait_s: float, workers: int
    ) -> None:
        if max_batch < 1 or workers < 1 or max_wait_s < 0:
            raise ValueError(
                f"expected max_batch >= 1, workers >= 1 and max_wait_s >= 0, got {max_batch}, "
                f"{workers} and {max_wait_s}"
            )
        self._run = run
        self.max_batch, self.max_wait_s, self.workers = max_batch, max_wait_s, workers
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, "engine")
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry: _Item | None = None
        self.batch_sizes: list[int] = []  # images per engine call, for the log and the bench

    async def submit(self, feed: Feed) -> Outputs:
        """Queue ``feed`` and wait for its slice of the batch's outputs."""
        return await self.submit_lazy(len(feed["images"]), lambda: feed)

    async def submit_lazy(self, count: int, make_feed: Callable[[], Feed]) -> Outputs:
        """Queue ``count`` images whose feed ``make_feed()`` builds on the engine's thread,
        just before the batch runs (decode and preprocess without another thread hop: on 2
        busy cores each hop costs a scheduling delay). An exception from ``make_feed`` fails
        that request only."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop())
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(count, make_feed, future))
        return await future

    async def _next(self, timeout: float | None) -> _Item | None:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if timeout is None:
            return await self._queue.get()
        if timeout <= 0:
            return None if self._queue.empty() else self._queue.get_nowait()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.workers)
        while True:
            await slots.acquire()  # while every worker is busy, requests queue up
            first = await self._next(None)
            assert first is not None
            batch, count = [first], first.count
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                item = await self._next(max(0.0, deadline - loop.time()))
                if item is None:
                    break
                if count + item.count > self.max_batch:
                    self._carry = item  # first of the next batch
                    break
                batch.append(item)
                count += item.count
            task = asyncio.create_task(self._execute(batch))
            task.add_done_callback(lambda _: slots.release())

    def _work(self, batch: list[_Item]) -> tuple[list[Exception | None], Outputs | None]:
        """On the engine's thread: build each feed (errors per item), run the good ones."""
        feeds: list[Feed | None] = []
        errors: list[Exception | None] = []
        for item in batch:
            try:
                feeds.append(item.make_feed())
                errors.append(None)
            except Exception as exc:  # the request's own mistake, reported to it alone
                feeds.append(None)
                errors.append(exc)
        good = [feed for feed in feeds if feed is not None]
        if not good:
            return errors, None
        feed = {name: np.concatenate([f[name] for f in good]) for name in good[0]}
        self.batch_sizes.append(len(feed["images"]))
        return errors, self._run(feed)

    async def _execute(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]  # timed-out ones are cancelled
        if not live:
            return
        try:
            errors, outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._work, live
            )
        except Exception as exc:  # the engine failed: handed to each waiting request
            errors, outputs = [exc] * len(live), None
        start = 0
        for item, error in zip(live, errors, strict=True):
            if item.future.done():
                start += 0 if error else item.count
                continue
            if error is not None:
                item.future.set_exception(error)
                continue
            end = start + item.count
            assert outputs is not None
            item.future.set_result(tuple(output[start:end] for output in outputs))
            start = end
