"""Prediction helpers shared by the service, `cnnops predict` and the benchmark, and the adaptive
batcher, with a real model and real threads."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import numpy as np
import pytest

from cnnops.core.errors import ImageDecodeError
from cnnops.inference.batching import AdaptiveBatcher
from cnnops.modeling.predict import (
    batch_buckets,
    decode_base64_image,
    top_k,
)


def test_base64_bare_and_data_url():
    raw = b"\x89PNG fake bytes"
    text = base64.b64encode(raw).decode()
    assert decode_base64_image(text, 1000) == raw
    assert decode_base64_image("data:image/png;base64," + text, 1000) == raw
    assert decode_base64_image("  data:image/webp;charset=x;base64," + text + "\n", 1000) == raw


@pytest.mark.parametrize(
    "text, words",
    [
        ("abc!", "invalid base64"),
        ("data:image/png,plain", "not base64-encoded"),
        (base64.b64encode(b"x" * 2000).decode(), "over the size limit"),
    ],
)
def test_base64_refusals(text, words):
    with pytest.raises(ImageDecodeError, match=words):
        decode_base64_image(text, 1000)


def test_top_k_orders_and_clamps():
    probabilities = np.array([0.1, 0.6, 0.3], dtype=np.float32)
    assert [p.label for p in top_k(probabilities, ["a", "b", "c"], 2)] == ["b", "c"]
    assert len(top_k(probabilities, ["a", "b", "c"], 99)) == 3
    assert top_k(probabilities, ["a", "b", "c"], 1)[0].probability == pytest.approx(0.6)


def test_buckets_are_powers_of_two_up_to_the_cap():
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert batch_buckets(48) == [1, 2, 4, 8, 16, 32, 48]
    assert batch_buckets(1) == [1]


def slow_model(calls: list[int], delay: float = 0.02):
    """Echoes row sums; records each call's batch size; slow enough for requests to pile up."""

    def call(items: np.ndarray) -> np.ndarray:
        calls.append(len(items))
        time.sleep(delay)
        return items.reshape(len(items), -1).sum(axis=1, keepdims=True)

    return call


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    calls: list[int] = []
    seen: list[int] = []
    batcher = AdaptiveBatcher(slow_model(calls), max_batch_size=16, on_batch=seen.append)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.predict(np.full((1, 2), i)) for i in range(40)))

    results = asyncio.run(main())
    assert [int(r[0, 0]) for r in results] == [2 * i for i in range(40)]
    assert sum(calls) == 40 and max(calls) <= 16
    assert len(calls) < 40  # requests were batched, not run one by one
    assert seen == calls


def test_a_callers_items_stay_together_and_oversized_requests_are_split():
    calls: list[int] = []
    batcher = AdaptiveBatcher(slow_model(calls, 0.001), max_batch_size=8)

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(
            batcher.predict(np.ones((5, 1))), batcher.predict(np.ones((5, 1))), batcher.predict(np.ones((20, 1)))
        )

    small, other, big = asyncio.run(main())
    assert small.shape == (5, 1) and other.shape == (5, 1) and big.shape == (20, 1)
    assert max(calls) <= 8 and sum(calls) == 30


def test_a_failing_model_call_fails_only_its_batch_and_the_batcher_goes_on():
    fail = threading.Event()
    fail.set()

    def flaky(items: np.ndarray) -> np.ndarray:
        if fail.is_set():
            fail.clear()
            raise RuntimeError("device lost")
        return items

    batcher = AdaptiveBatcher(flaky, max_batch_size=4)

    async def main() -> tuple[BaseException, np.ndarray]:
        first = await asyncio.gather(batcher.predict(np.ones((1, 1))), return_exceptions=True)
        return first[0], await batcher.predict(np.full((1, 1), 7))

    error, after = asyncio.run(main())
    assert isinstance(error, RuntimeError) and str(error) == "device lost"
    assert after[0, 0] == 7
