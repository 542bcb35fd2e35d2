"""The cnnops HTTP service: one registered model version, served with BentoML.

`Classifier` parses uploads, decodes them with the library's one decode function, refuses bad
input with a 4xx JSON error, and serves the web page. Decoded images from concurrent requests
share model calls through an in-process adaptive batcher; only valid uint8 arrays reach it, so
one client's bad image can never fail another's batch.

Why not BentoML's own batching: it needs the model in a second service, and 1.4.40's
inter-service client closes its session every `runner_connection.max_requests` (100) calls while
other calls are still using it, which turns concurrent load into 500s. One process also saves a
serialisation hop per request. Access logs are off: at these request rates they cost more CPU
than the model (`/metrics` counts every request).

The model comes from a served-model folder (`cnnops.export`): `$CNNOPS_MODEL_DIR`, else the
copy packed beside this file when a bento is built.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from cnnops.batching import AdaptiveBatcher
from cnnops.config import ServeConfig
from cnnops.errors import CnnopsError, ImageDecodeError
from cnnops.export import ServedModel, read_served_model
from cnnops.predict import (
    batch_buckets,
    decode_base64_image,
    decode_for_model,
    load_keras_model,
    predict_bucketed,
    predict_pixels,
    top_k,
)
from serving.limits import RequestGuard

MODEL_DIR_ENV = "CNNOPS_MODEL_DIR"
SERVE_CONFIG_ENV = "CNNOPS_SERVE_CONFIG"
PACKED_MODEL_DIR = Path(__file__).resolve().parent / "model"
STATIC = Path(__file__).resolve().parent / "static"
# Adaptive batching: at most this many images per model call.
MAX_BATCH_SIZE = 64
# Uploads up to this size are read and decoded in the event loop: about 0.1 ms of work.
INLINE_DECODE_BYTES = 32 * 1024
BATCH_SIZES = bentoml.metrics.Histogram(
    name="cnnops_batch_size",
    documentation="Images per model call (adaptive batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
TopK = Annotated[int | None, Field(default=None, ge=1, le=1000, description="How many classes to return.")]
ImageFile = Annotated[Path, ContentType("image/*")]


def served_model_dir() -> Path:
    """The folder to serve: `$CNNOPS_MODEL_DIR`, else the one packed into this bento."""
    return Path(os.environ.get(MODEL_DIR_ENV) or PACKED_MODEL_DIR)


def serve_config() -> ServeConfig:
    """Limits and defaults, passed by `cnnops serve` as the JSON of the config's `serve` section."""
    return ServeConfig.model_validate_json(os.environ.get(SERVE_CONFIG_ENV) or "{}")


def load_served_model() -> ServedModel:
    """Read the served-model folder, or stop the service with the one reason it cannot start."""
    try:
        return read_served_model(served_model_dir())
    except CnnopsError as err:
        raise SystemExit(f"cnnops: error: cannot serve: {err}") from None


async def page(_: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def api_docs(_: Request) -> FileResponse:
    """BentoML's OpenAPI (Swagger) page, moved from / to /docs to make room for the web page."""
    from _bentoml_impl import server

    return FileResponse(Path(server.__file__).parent / "main-openapi.html", media_type="text/html")


async def model_info(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.info)


web = Starlette(routes=[Route("/", page), Route("/docs", api_docs), Route("/info", model_info)])


def error(ctx: bentoml.Context, status: int, message: str) -> dict[str, Any]:
    """A 4xx answer with a JSON error; the request's own fault, so the service carries on."""
    ctx.response.status_code = status
    return {"error": message}


@bentoml.service(name="cnnops", workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
@bentoml.asgi_app(web)
class Classifier:
    """Classify images: one upload, a base64 or data-URL image, or a batch of uploads."""

    def __init__(self) -> None:
        self.settings = serve_config()
        self.served = load_served_model()
        model = load_keras_model(self.served.folder)
        spec = self.served.spec
        buckets = batch_buckets(MAX_BATCH_SIZE)
        for size in buckets:  # trace every batch shape before the first request, not during one
            predict_pixels(model, np.zeros((size, spec.height, spec.width, spec.channels), np.uint8))
        self.batcher = AdaptiveBatcher(
            lambda pixels: predict_bucketed(model, pixels, buckets), MAX_BATCH_SIZE, on_batch=BATCH_SIZES.observe
        )
        web.state.info = self.info()
        # TensorFlow and Keras leave millions of long-lived objects; without this, every full
        # collection walks them all and stalls every request in flight for a few hundred ms.
        gc.freeze()

    def info(self) -> dict[str, Any]:
        """Model facts for clients and the page: name, version, aliases, test metrics, classes."""
        return {
            **self.served.info.model_dump(mode="json", exclude={"schema_version"}),
            "class_names": self.served.spec.class_names,
            "input": {
                "height": self.served.spec.height,
                "width": self.served.spec.width,
                "mode": self.served.spec.mode,
            },
            "limits": self.settings.model_dump(),
            "max_request_bytes": self.settings.max_request_bytes,
        }

    def decode(self, data: bytes) -> np.ndarray:
        return decode_for_model(data, self.served.spec, self.settings.max_image_pixels)

    async def classify_pixels(self, pixels: np.ndarray, k: int | None) -> list[list[dict[str, Any]]]:
        """Top-k per image, the model call shared with whatever other requests are waiting."""
        probabilities = await self.batcher.predict(pixels)
        names = self.served.spec.class_names
        return [top_k(row, names, k or self.settings.top_k) for row in probabilities]

    async def decode_bytes(self, data: bytes) -> np.ndarray:
        """Decode small images in the event loop (a thread hop costs more than they do); large
        ones in a worker thread, so one big photo never stalls the other requests."""
        if len(data) <= INLINE_DECODE_BYTES:
            return self.decode(data)
        return await anyio.to_thread.run_sync(self.decode, data)

    async def decode_file(self, path: Path) -> np.ndarray:
        size = path.stat().st_size
        data = path.read_bytes() if size <= INLINE_DECODE_BYTES else await anyio.Path(path).read_bytes()
        return await self.decode_bytes(data)

    async def decode_base64(self, text: str) -> np.ndarray:
        return await self.decode_bytes(decode_base64_image(text, self.settings.max_request_bytes))

    async def answer_one(self, decoding: Awaitable[np.ndarray], ctx: bentoml.Context, k: int | None) -> dict[str, Any]:
        """One image's top-k, or a 400 naming why its bytes are not a usable image."""
        try:
            pixels = await decoding
        except ImageDecodeError as err:
            return error(ctx, 400, f"image: {err}")
        (predictions,) = await self.classify_pixels(pixels[None], k)
        return {"predictions": predictions}

    @bentoml.api(route="/classify")
    async def classify(self, image: ImageFile, ctx: bentoml.Context, top_k: TopK = None) -> dict[str, Any]:
        """Classify one uploaded image (multipart field `image`): jpg, png, webp, gif or bmp."""
        return await self.answer_one(self.decode_file(image), ctx, top_k)

    @bentoml.api(route="/classify_base64")
    async def classify_base64(self, image: str, ctx: bentoml.Context, top_k: TopK = None) -> dict[str, Any]:
        """Classify a base64 image or a data URL (`data:image/png;base64,...`), as a canvas sends it."""
        return await self.answer_one(self.decode_base64(image), ctx, top_k)

    @bentoml.api(route="/classify_batch")
    async def classify_batch(self, images: list[ImageFile], ctx: bentoml.Context, top_k: TopK = None) -> dict[str, Any]:
        """Classify several uploaded images (repeat the multipart field `images`), in order."""
        limit = self.settings.max_batch_images
        if not images:
            return error(ctx, 400, "images: the batch is empty; send at least one image")
        if len(images) > limit:
            return error(ctx, 400, f"images: {len(images)} images is over the batch limit of {limit}")
        decoded: list[np.ndarray] = []
        for index, path in enumerate(images):
            try:
                decoded.append(await self.decode_file(path))
            except ImageDecodeError as err:
                return error(ctx, 400, f"images[{index}]: {err}")
        results = await self.classify_pixels(np.stack(decoded), top_k)
        return {"results": [{"predictions": predictions} for predictions in results]}


MULTIPART_FIELDS = {"/classify": {"image", "top_k"}, "/classify_batch": {"images", "top_k"}}
# The decorators made Classifier a bentoml Service; mypy does not apply class decorators.
cast("bentoml.Service[Classifier]", Classifier).add_asgi_middleware(
    RequestGuard, limit=lambda: serve_config().max_request_bytes, multipart_fields=MULTIPART_FIELDS
)
