"""Decoding the prompt stream's next rows on worker threads while the step runs (`data.num_workers`).

The stream keeps choosing rows itself, in its own order, on the loop's thread: the workers only decode
(read the row, load its images, decode its video to frames) the rows that order puts next, each keyed by
where it sits in that order. A row is taken from its worker when the stream reaches it, or decoded then
if no worker holds it, so which rows a batch gets, and every random draw, are the same with any number of
workers; a worker's error (a bad row) is raised where decoding in the loop would have raised it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

Key = tuple[int, int]  # (epoch, position): where a row sits in the stream's order
T = TypeVar("T")


class Prefetch(Generic[T]):
    """Rows decoded ahead on `workers` threads (0: none; every row decoded when taken)."""

    def __init__(self, decode: Callable[[int], T], workers: int):
        self.decode, self.workers = decode, workers
        self.pool: ThreadPoolExecutor | None = None  # started by the first rows queued
        self.pending: dict[Key, Future] = {}

    def take(self, key: Key, index: int) -> T:
        """Row `index` at `key`, decoded: by its worker (waiting for it), else here."""
        future = self.pending.pop(key, None)
        return future.result() if future is not None else self.decode(index)

    def queue(self, upcoming: Sequence[tuple[Key, int]]) -> None:
        """Decode the rows at `upcoming` ahead; rows queued before and no longer upcoming are dropped."""
        if self.workers <= 0:
            return
        wanted = {key for key, _ in upcoming}
        for key in [key for key in self.pending if key not in wanted]:  # passed over, or found bad meanwhile
            self.pending.pop(key).cancel()
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        for key, index in upcoming:
            if key not in self.pending:
                self.pending[key] = self.pool.submit(self.decode, index)

    def clear(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pending = {}

    def close(self) -> None:
        """Drop what is queued and stop the workers (a later `queue` starts them again)."""
        self.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
