"""Adaptive batching for a model called from many concurrent requests in one event loop.

Requests queue while the model is busy; when it is free, everything waiting (up to a cap) goes
in one call. Under light load a request runs alone at once (no fixed wait); under heavy load
batches grow by themselves, which is what keeps throughput up and tail latency bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Pending:
    items: np.ndarray
    done: asyncio.Future[np.ndarray] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AdaptiveBatcher:
    """Gather concurrent `predict` calls into batched calls of `model_call` run in a worker thread.

    `model_call` takes an (N, ...) array and returns an (N, ...) array; `on_batch` is told each
    batch's size (for metrics). One caller's items are never split across two model calls unless
    they alone exceed `max_batch_size`.
    """

    def __init__(
        self,
        model_call: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model_call = model_call
        self.max_batch_size = max_batch_size
        self.on_batch = on_batch or (lambda size: None)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def predict(self, items: np.ndarray) -> np.ndarray:
        """Model output for `items`, computed in whatever batch is next."""
        if len(items) > self.max_batch_size:
            parts = [items[i : i + self.max_batch_size] for i in range(0, len(items), self.max_batch_size)]
            return np.concatenate([await self.predict(part) for part in parts])
        queue = self._ensure_worker()
        pending = _Pending(items)
        await queue.put(pending)
        return await pending.done

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        """Start the batching loop in the running event loop, on first use (never at import);
        returns the queue it takes requests from."""
        queue = self._queue
        if queue is None or self._worker is None or self._worker.done():
            queue = self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return queue

    async def _run(self) -> None:
        assert self._queue is not None
        held: _Pending | None = None
        while True:
            batch = [held or await self._queue.get()]
            held = None
            size = len(batch[0].items)
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if size + len(nxt.items) > self.max_batch_size:
                    held = nxt
                    break
                batch.append(nxt)
                size += len(nxt.items)
            await self._call(batch)

    async def _call(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.done.cancelled()]
        if not live:
            return
        self.on_batch(sum(len(p.items) for p in live))
        try:
            outputs = await asyncio.to_thread(self.model_call, np.concatenate([p.items for p in live]))
        except Exception as err:  # noqa: BLE001 - handed to every caller of this batch
            for pending in live:
                if not pending.done.done():
                    pending.done.set_exception(err)
            return
        start = 0
        for pending in live:
            end = start + len(pending.items)
            if not pending.done.done():
                pending.done.set_result(outputs[start:end])
            start = end
