"""Micro-batching: concurrent requests share one model call, behind a bounded queue.

Each request puts its dialogues on the queue and awaits its results. One worker takes the first
waiting request, gathers others for up to ``max_wait`` seconds or ``max_dialogues`` dialogues, and
runs the model once for all of them in a thread (the event loop never blocks on the model); the
scorer sorts the turns by length inside, so padding stays small. A full queue is refused at once
(the route answers 503 with Retry-After) instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class Overloaded(Exception):
    """The queue is full; try again later."""


@dataclass
class _Job:
    items: Sequence
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher:
    def __init__(
        self,
        run: Callable[[list], list],
        max_dialogues: int = 32,
        max_wait: float = 0.005,
        queue_size: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.run = run  # blocking: list of items -> list of results, same order
        self.max_dialogues = max_dialogues
        self.max_wait = max_wait
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self.on_batch = on_batch  # (items in the batch, seconds in the model), for metrics
        self._worker: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self.queue.qsize()

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self.queue.empty():  # nobody waits forever on a stopped server
            job = self.queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(Overloaded("the server is shutting down"))

    async def submit(self, items: Sequence) -> list:
        job = _Job(items)
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(f"{self.queue.maxsize} requests are already waiting") from None
        return await job.future

    async def _gather(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        count = len(jobs[0].items)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_dialogues:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                break
            jobs.append(job)
            count += len(job.items)
        return jobs

    async def _work(self) -> None:
        while True:
            jobs = await self._gather()
            items = [item for job in jobs for item in job.items]
            start = time.perf_counter()
            try:
                results = await asyncio.to_thread(self.run, items)
            except Exception as error:  # the requests fail, the worker lives on
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            if self.on_batch:
                self.on_batch(len(items), time.perf_counter() - start)
            offset = 0
            for job in jobs:
                if not job.future.done():  # a client that went away has a cancelled future
                    job.future.set_result(results[offset : offset + len(job.items)])
                offset += len(job.items)
