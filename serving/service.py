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

The contract is the OpenAPI document at /docs.json: BentoML generates it from the typed API
methods below, and `contract_document` adds what BentoML 1.4 cannot say (the refusals, the raw
image body, the limits of this server's configuration).

The model comes from a served-model folder (`cnnops.inference.export`): `$CNNOPS_MODEL_DIR`, else the
copy packed beside this file when a bento is built.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast
from urllib.parse import parse_qs

import anyio
import bentoml
import numpy as np
from bentoml.validators import ContentType
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from cnnops.contracts.drift import DriftVerdict, ServedDrift
from cnnops.contracts.export import ONNX_FILE
from cnnops.contracts.served import (
    BatchClassification,
    Classification,
    ModelInput,
    Prediction,
    ServedModel,
    ServedRuntime,
    ServiceInfo,
    read_served_model,
)
from cnnops.core.errors import CnnopsError, ImageDecodeError, first_problem
from cnnops.core.paths import state_home
from cnnops.data.images import DecodedImage, decode_image
from cnnops.inference.batching import AdaptiveBatcher
from cnnops.inference.onnx_runtime import load_onnx_model
from cnnops.inference.runtime import choose_runtime
from cnnops.modeling.predict import (
    batch_buckets,
    decode_base64_image,
    load_keras_model,
    predict_bucketed,
    predict_pixels,
    top_k,
    with_embedding,
)
from cnnops.monitoring.monitor import DriftMonitor, open_monitor
from cnnops.monitoring.sample_keeper import SampleKeeper
from cnnops.serving.limits import (
    BODY_TIMEOUT_S,
    ASGIApp,
    Receive,
    RequestGuard,
    RouteRules,
    Scope,
    Send,
    matches,
    use_traffic_timeout,
)
from cnnops.settings.config import DriftConfig, ServeConfig
from cnnops.settings.naming import slug

Section = TypeVar("Section", bound=BaseModel)
MODEL_DIR_ENV = "CNNOPS_MODEL_DIR"
SERVE_CONFIG_ENV = "CNNOPS_SERVE_CONFIG"
DRIFT_CONFIG_ENV = "CNNOPS_DRIFT_CONFIG"
# Where the traffic window is saved (in Kubernetes, on the pod's volume); else the state folder.
WINDOW_FILE_ENV = "CNNOPS_WINDOW_FILE"
# Where kept samples go (`serve.keep_samples`); else the state folder.
SAMPLES_DIR_ENV = "CNNOPS_SAMPLES_DIR"
LOG = logging.getLogger("cnnops.serve")
PACKED_MODEL_DIR = Path(__file__).resolve().parent / "model"
STATIC = Path(__file__).resolve().parent / "static"
# Adaptive batching: at most this many images per model call.
MAX_BATCH_SIZE = 64
# Uploads up to this size are read and decoded in the event loop: about 0.1 ms of work.
INLINE_DECODE_BYTES = 32 * 1024
# A request that has not started its response within this many seconds is answered 504 (`TrafficTimeout`).
TRAFFIC_TIMEOUT_S = 60
MAX_TOP_K = 1000
BATCH_SIZES = bentoml.metrics.Histogram(
    name="cnnops_batch_size",
    documentation="Images per model call (adaptive batching).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
# The verdict on the traffic window, refreshed with each save of the window and each GET /drift.
DRIFT_DETECTED = bentoml.metrics.Gauge(
    name="cnnops_drift_detected",
    documentation="1 when the last verdict on the served traffic was drift, 0 when not or with no verdict.",
    multiprocess_mode="livemostrecent",
)
DRIFT_P_VALUE = bentoml.metrics.Gauge(
    name="cnnops_drift_p_value",
    documentation="The last verdict's joint p-value: the smallest family p-value times 3 (NaN with no verdict).",
    multiprocess_mode="livemostrecent",
)
DRIFT_WINDOW_SIZE = bentoml.metrics.Gauge(
    name="cnnops_drift_window_size",
    documentation="Served images in the drift window.",
    multiprocess_mode="livemostrecent",
)
# Pauses every request in flight waits out: the process's garbage collections, and (in a worker
# thread, which still takes the GIL for its Python parts) each save and verdict of the drift window.
PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GC_PAUSES = bentoml.metrics.Histogram(
    name="cnnops_gc_pause_seconds",
    documentation="Garbage collections of the serving process, by generation, in seconds.",
    labelnames=["generation"],
    buckets=PAUSE_BUCKETS,
)
DRIFT_SAVES = bentoml.metrics.Histogram(
    name="cnnops_drift_save_seconds",
    documentation="Saving the drift window and judging it (a worker thread), in seconds.",
    buckets=PAUSE_BUCKETS,
)
# strict: a JSON `true` or `2.5` is not a number of classes (pydantic's lax mode would take them).
TopK = Annotated[
    int | None, Field(default=None, ge=1, le=MAX_TOP_K, strict=True, description="How many classes to return.")
]
ImageFile = Annotated[Path, ContentType("image/*")]
FILE_PART = "A file part of an image/* type: jpg, png, webp, gif or bmp."
UploadedImage = Annotated[ImageFile, Field(description=FILE_PART)]
# `image-base64` is not a standard format: it says the text is an image's base64, bare or as a
# data URL, which no JSON Schema keyword can (a client that does not know the name ignores it).
Base64Image = Annotated[
    str,
    Field(
        min_length=1,
        description="An image file's bytes in base64, bare or as a data URL (`data:image/png;base64,...`).",
        json_schema_extra={"format": "image-base64"},
    ),
]
ImageFiles = Annotated[
    list[ImageFile], Field(min_length=1, description=f"The images, in order (repeat the field). {FILE_PART}")
]


def served_model_dir() -> Path:
    """The folder to serve: `$CNNOPS_MODEL_DIR`, else the one packed into this bento."""
    return Path(os.environ.get(MODEL_DIR_ENV) or PACKED_MODEL_DIR)


def serve_config() -> ServeConfig:
    """Limits and defaults, passed by `cnnops serve` as the JSON of the config's `serve` section."""
    return section_from_env(ServeConfig, SERVE_CONFIG_ENV)


def drift_config() -> DriftConfig:
    """The drift section, passed by `cnnops serve` as JSON like the serve section."""
    return section_from_env(DriftConfig, DRIFT_CONFIG_ENV)


def section_from_env(section: type[Section], variable: str) -> Section:
    """A config section from the JSON in `variable`; one that does not validate stops the
    service with the one reason (a Deployment's env is the user's to fix)."""
    try:
        return section.model_validate_json(os.environ.get(variable) or "{}")
    except ValidationError as err:
        raise SystemExit(f"cnnops: error: cannot serve: ${variable}: {first_problem(err, 'the section')}") from None


def window_file(served: ServedModel) -> Path:
    """`$CNNOPS_WINDOW_FILE`, else one file per served run under the state folder."""
    named = os.environ.get(WINDOW_FILE_ENV)
    if named:
        return Path(named)
    return state_home() / "drift" / f"{slug(served.info.registered_model)}-run-{served.info.run_id}.npz"


def samples_folder(served: ServedModel) -> Path:
    named = os.environ.get(SAMPLES_DIR_ENV)
    if named:
        return Path(named)
    return state_home() / "samples" / slug(served.info.registered_model)


def publish_verdict(verdict: DriftVerdict) -> None:
    DRIFT_DETECTED.set(1 if verdict.drift else 0)
    DRIFT_P_VALUE.set(float("nan") if verdict.p_value is None else verdict.p_value)
    DRIFT_WINDOW_SIZE.set(verdict.window_size)


def pick_runtime(settings: ServeConfig, served: ServedModel) -> ServedRuntime:
    """`serve.runtime` for this folder, or stop the service with the one reason it cannot."""
    try:
        return choose_runtime(settings.runtime, served)
    except CnnopsError as err:
        raise SystemExit(f"cnnops: error: cannot serve: {err}") from None


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
    return JSONResponse(request.app.state.info.model_dump(mode="json", exclude={"schema_version"}))


async def drift_status(request: Request) -> JSONResponse:
    """The verdict on the window (`ServedDrift`): judged in a worker thread, tens of ms."""
    snapshot = await anyio.to_thread.run_sync(request.app.state.drift)
    publish_verdict(snapshot.verdict)
    return JSONResponse(snapshot.model_dump(mode="json"))


async def openapi_document(request: Request) -> JSONResponse:
    """The contract (`contract_document`), in place of BentoML's own /docs.json."""
    return JSONResponse(request.app.state.openapi)


web = Starlette(
    routes=[
        Route("/", page),
        Route("/docs", api_docs),
        Route("/docs.json", openapi_document),
        Route("/info", model_info),
        Route("/drift", drift_status),
    ]
)


def error(ctx: bentoml.Context, status: int, message: str) -> JSONResponse:
    """A 4xx answer with a JSON error; the request's own fault, so the service carries on. (BentoML
    sets a returned response's status from the context, so both carry it.)"""
    ctx.response.status_code = status
    return JSONResponse({"error": message}, status_code=status)


def query_top_k(query_string: bytes) -> int | None:
    """`top_k` from a query string, or None when it has none; ValueError says what is wrong."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("top_k")
    if not values:
        return None
    text = values[-1]
    if not re.fullmatch(r"[0-9]{1,9}", text) or not 1 <= int(text) <= MAX_TOP_K:
        raise ValueError(f"must be a whole number from 1 to {MAX_TOP_K}, got {text[:20]!r}")
    return int(text)


@bentoml.service(
    name="cnnops", workers=1, traffic={"timeout": TRAFFIC_TIMEOUT_S}, logging={"access": {"enabled": False}}
)
@bentoml.asgi_app(web)
class Classifier:
    """Classify images: one upload or raw image body, a base64 or data-URL image, or a batch of uploads."""

    def __init__(self) -> None:
        self.settings = serve_config()
        self.served = load_served_model()
        self.runtime = pick_runtime(self.settings, self.served)
        config = drift_config()
        # Each loader also opens the drift window, whose width is the model's embedding's.
        predict = self.load_onnx(config) if self.runtime.name == "onnx" else self.load_keras(config)
        self.keeper = self.start_keeper()
        print(f"cnnops: runtime {self.runtime.name}: {self.runtime.reason}", file=sys.stderr, flush=True)
        self.batcher = AdaptiveBatcher(predict, MAX_BATCH_SIZE, on_batch=BATCH_SIZES.observe)
        web.state.info = self.info()
        web.state.drift = self.drift
        generated = cast("bentoml.Service[Classifier]", Classifier).openapi_spec.asdict()
        web.state.openapi = contract_document(generated, self.settings)
        # TensorFlow and Keras leave millions of long-lived objects; without this, every full
        # collection walks them all and stalls every request in flight for a few hundred ms.
        gc.freeze()
        if observe_collection not in gc.callbacks:  # once per process, however many services it builds
            gc.callbacks.append(observe_collection)

    def load_onnx(self, config: DriftConfig) -> Callable[[np.ndarray], np.ndarray]:
        """ONNX Runtime on the exported served function: no TensorFlow in this process. Its rows
        carry the embedding whenever the export found one; the first call allocates its buffers."""
        spec = self.served.spec
        try:
            model = load_onnx_model(
                self.served.folder / ONNX_FILE, spec.height, spec.width, spec.channels, self.settings.onnx_threads
            )
        except CnnopsError as err:
            raise SystemExit(f"cnnops: error: cannot serve: {err}") from None
        model.predict(np.zeros((1, spec.height, spec.width, spec.channels), np.uint8))
        assert self.served.export is not None  # pick_runtime chose ONNX for a passed export
        self.monitor = self.start_monitor(config, self.served.export.embedding_width or None)
        return model.predict

    def load_keras(self, config: DriftConfig) -> Callable[[np.ndarray], np.ndarray]:
        """The Keras model, with the embedding as a second output when drift is recorded; every
        batch shape traced before the first request, not during one."""
        try:
            plain = load_keras_model(self.served.folder)
        except ImportError as err:  # the ONNX serving image has no Keras
            raise SystemExit(
                f"cnnops: error: cannot serve with Keras ({err}): {self.runtime.reason}; "
                "build this model's service image on the project image (`cnnops bento --containerize --runtime keras`)"
            ) from None
        # The embedding comes from the same call as the probabilities, side by side in one array.
        embedded = with_embedding(plain) if config.record else None
        width = None if embedded is None else int(embedded.outputs[1].shape[-1])
        self.monitor = self.start_monitor(config, width)
        # without a reference to judge against, the embedding would be computed for nothing
        model = embedded if embedded is not None and self.monitor.recording else plain
        spec = self.served.spec
        buckets = batch_buckets(MAX_BATCH_SIZE)
        for size in buckets:
            predict_pixels(model, np.zeros((size, spec.height, spec.width, spec.channels), np.uint8))
        return lambda pixels: predict_bucketed(model, pixels, buckets)

    def start_monitor(self, config: DriftConfig, width: int | None) -> DriftMonitor:
        """The drift window, read back from its file; the verdict published before any request."""
        info = self.served.info
        if not config.record:
            width = None
        monitor = open_monitor(self.served.folder, info.run_id, self.served.spec.class_names, width, config, None)
        if not config.record:
            monitor.unavailable = "drift.record is off: the service keeps no window of its traffic"
        elif monitor.recording:
            monitor.path = window_file(self.served)
        print(f"cnnops: {monitor.restore()}", file=sys.stderr, flush=True)
        publish_verdict(monitor.verdict())
        return monitor

    def start_keeper(self) -> SampleKeeper | None:
        settings = self.settings
        if not settings.keep_samples:
            return None
        folder = samples_folder(self.served)
        limit = int(settings.max_samples_mb * 1024 * 1024)
        keeper = SampleKeeper(folder, settings.samples_per_minute, settings.max_samples, limit)
        print(
            f"cnnops: keeping up to {settings.samples_per_minute:g} served images a minute in {folder}", file=sys.stderr
        )
        return keeper

    def drift(self) -> ServedDrift:
        info = self.served.info
        return self.monitor.snapshot(info.registered_model, info.version, self.served.spec.class_names)

    def save_and_publish(self) -> None:
        """Runs in a worker thread: the window to its file, the verdict to the gauges."""
        with DRIFT_SAVES.time():
            self.monitor.save()
            publish_verdict(self.monitor.verdict())

    @bentoml.on_shutdown
    def save_window(self) -> None:
        """The last requests to the file before the process goes; a save in flight is waited for."""
        try:
            self.monitor.save()
        except Exception:  # a shutdown must finish whatever the file system says
            LOG.exception("drift: the window could not be saved at shutdown")

    def info(self) -> ServiceInfo:
        """Model facts for clients and the page: name, version, aliases, test metrics, classes."""
        spec = self.served.spec
        return ServiceInfo(
            **self.served.info.model_dump(),
            class_names=spec.class_names,
            input=ModelInput(height=spec.height, width=spec.width, mode=spec.mode),
            runtime=self.runtime,
            limits=self.settings,
            max_request_bytes=self.settings.max_request_bytes,
        )

    def decode(self, data: bytes) -> DecodedImage:
        spec = self.served.spec
        return decode_image(data, spec.mode, spec.size, max_pixels=self.settings.max_image_pixels)

    async def classify_images(
        self, images: list[DecodedImage], uploads: list[bytes], k: int | None
    ) -> list[list[Prediction]]:
        """Top-k per image, the model call shared with whatever other requests are waiting; the
        same call's embeddings go to the drift window, and the upload to the sample keeper."""
        pixels = np.stack([image.pixels for image in images])
        outputs = await self.batcher.predict(pixels)
        names = self.served.spec.class_names
        probabilities = outputs[:, : len(names)]
        if self.monitor.recording:
            self.monitor.record(probabilities, outputs[:, len(names) :], pixels, images)
            if self.monitor.claim_save():
                saving = asyncio.get_running_loop().run_in_executor(None, self.save_and_publish)
                saving.add_done_callback(report_failure)
        if self.keeper is not None:
            for image, data, row in zip(images, uploads, probabilities, strict=True):
                if self.keeper.admit(len(data)):  # the file is written in a worker thread
                    top = int(row.argmax())
                    keep = (data, image.format.lower(), names[top], float(row[top]))
                    kept = asyncio.get_running_loop().run_in_executor(None, self.keeper.keep, *keep)
                    kept.add_done_callback(report_failure)
        return [top_k(row, names, k or self.settings.top_k) for row in probabilities]

    async def decode_bytes(self, data: bytes) -> DecodedImage:
        """Decode small images in the event loop (a thread hop costs more than they do); large
        ones in a worker thread, so one big photo never stalls the other requests."""
        if len(data) <= INLINE_DECODE_BYTES:
            return self.decode(data)
        return await anyio.to_thread.run_sync(self.decode, data)

    async def read_file(self, path: Path) -> bytes:
        size = path.stat().st_size
        return path.read_bytes() if size <= INLINE_DECODE_BYTES else await anyio.Path(path).read_bytes()

    async def classify_one(self, data: bytes, k: int | None) -> Classification:
        """One image's top-k; ImageDecodeError names why its bytes are not a usable image."""
        image = await self.decode_bytes(data)
        (predictions,) = await self.classify_images([image], [data], k)
        return Classification(predictions=predictions)

    async def classify_raw(self, body: bytes, query_string: bytes) -> tuple[int, dict[str, Any]]:
        """A raw `image/*` body (`RawImageUploads`): the status and JSON an upload would get."""
        try:
            k = query_top_k(query_string)
        except ValueError as err:
            return 400, {"error": f"top_k: {err}"}
        try:
            result = await self.classify_one(body, k)
        except ImageDecodeError as err:
            return 400, {"error": f"image: {err}"}
        return 200, result.model_dump(mode="json")

    @bentoml.api(route="/classify", output_spec=Classification)
    async def classify(
        self, image: UploadedImage, ctx: bentoml.Context, top_k: TopK = None
    ) -> Classification | JSONResponse:
        """Classify one image: a multipart upload (field `image`), or the image itself as the body
        (`Content-Type: image/...`, `top_k` in the query): jpg, png, webp, gif or bmp."""
        try:  # an invalid query top_k is refused even when the form's top_k wins
            in_query = query_top_k(ctx.request.scope["query_string"])
        except ValueError as err:
            return error(ctx, 400, f"top_k: {err}")
        k = top_k if top_k is not None else in_query
        try:
            return await self.classify_one(await self.read_file(image), k)
        except ImageDecodeError as err:
            return error(ctx, 400, f"image: {err}")

    @bentoml.api(route="/classify_base64", output_spec=Classification)
    async def classify_base64(
        self, image: Base64Image, ctx: bentoml.Context, top_k: TopK = None
    ) -> Classification | JSONResponse:
        """Classify a base64 image or a data URL (`data:image/png;base64,...`), as a canvas sends it."""
        try:
            return await self.classify_one(decode_base64_image(image, self.settings.max_request_bytes), top_k)
        except ImageDecodeError as err:
            return error(ctx, 400, f"image: {err}")

    @bentoml.api(route="/classify_batch", output_spec=BatchClassification)
    async def classify_batch(
        self, images: ImageFiles, ctx: bentoml.Context, top_k: TopK = None
    ) -> BatchClassification | JSONResponse:
        """Classify several uploaded images (repeat the multipart field `images`), in order."""
        limit = self.settings.max_batch_images
        if len(images) > limit:
            return error(ctx, 400, f"images: {len(images)} images is over the batch limit of {limit}")
        decoded: list[DecodedImage] = []
        uploads: list[bytes] = []
        for index, path in enumerate(images):
            try:
                uploads.append(await self.read_file(path))
                decoded.append(await self.decode_bytes(uploads[-1]))
            except ImageDecodeError as err:
                return error(ctx, 400, f"images[{index}]: {err}")
        results = await self.classify_images(decoded, uploads, top_k)
        return BatchClassification(results=[Classification(predictions=p) for p in results])


_collection_started = [0.0]


def observe_collection(phase: str, info: dict[str, int]) -> None:
    """The `gc.callbacks` entry that observes each collection's pause in `GC_PAUSES`."""
    if phase == "start":
        _collection_started[0] = time.perf_counter()
    else:
        GC_PAUSES.labels(generation=str(info["generation"])).observe(time.perf_counter() - _collection_started[0])


def report_failure(future: asyncio.Future[Any]) -> None:
    """A background write that failed is logged; it must not pass unseen, nor fail a request."""
    if not future.cancelled() and future.exception() is not None:
        LOG.error("a background write failed (the drift window or a kept sample)", exc_info=future.exception())


class RawImageUploads:
    """ASGI middleware: `POST /classify` with an `image/*` body is answered here, from the bytes
    themselves: no multipart parsing and no temporary file, which BentoML's file inputs cost. The
    image takes the same decode and the same batcher as an upload (`Classifier.classify_raw`).
    It sits inside `RequestGuard`, which has already bounded the body in size and time."""

    def __init__(self, app: ASGIApp, path: str = "/classify") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path):
            await self.app(scope, receive, send)
            return
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        if not matches(content_type.split(";")[0].strip().lower(), "image/*"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        classifier = cast(Classifier, bentoml.get_current_service())
        status, payload = await classifier.classify_raw(b"".join(chunks), scope.get("query_string", b""))
        body = json.dumps(payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def guarded_routes(settings: ServeConfig) -> dict[str, RouteRules]:
    """What each API route takes, for `RequestGuard`."""
    top = frozenset({"top_k"})
    return {
        "/classify": RouteRules(("multipart/form-data", "image/*"), {"image": 1}, top),
        "/classify_base64": RouteRules(("application/json",)),
        "/classify_batch": RouteRules(("multipart/form-data",), {"images": settings.max_batch_images}, top),
    }


def error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


COMPONENTS = "#/components/schemas/"
ERROR_REF = COMPONENTS + "Error"
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "description": "Why the request was refused. A validation error adds its `detail`.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
}
TOP_K_QUERY = {
    "name": "top_k",
    "in": "query",
    "required": False,
    "description": "How many classes to return (the multipart field `top_k` wins when both are sent).",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
}


def contract_document(generated: dict[str, Any], settings: ServeConfig) -> dict[str, Any]:
    """BentoML's generated OpenAPI document with what BentoML 1.4 cannot generate: the refusals each
    API answers (its fixed 400/404/500 entries go), the raw image body and query `top_k` of
    /classify, each image part's media type, the batch and byte limits of this configuration, and
    the routes of the mounted web app. Components nothing refers to any more are dropped."""
    doc = json.loads(json.dumps(generated))  # a copy, with the status codes as JSON has them
    limit = settings.max_request_bytes
    refusals = {
        "400": error_response("Malformed request, or not a usable image (the error says which)."),
        "408": error_response(f"The body did not arrive within {BODY_TIMEOUT_S:g} s."),
        "413": error_response(f"The body is over {limit} bytes (`serve.max_request_mb`)."),
        "415": error_response("A Content-Type this endpoint does not take."),
        "504": error_response(f"No answer could start within {TRAFFIC_TIMEOUT_S} s."),
    }
    for path in guarded_routes(settings):
        operation = doc["paths"][path]["post"]
        operation["responses"] = {"200": operation["responses"]["200"], **refusals}
        operation["description"] = " ".join(operation["description"].split())
        operation["description"] += f" Bodies over {limit} bytes are refused with 413."
        operation["x-max-request-bytes"] = limit
        operation["requestBody"]["required"] = True
        for content in operation["requestBody"]["content"].values():
            # null asks for the configured default, as an absent top_k does
            content["schema"]["properties"]["top_k"]["nullable"] = True
            if "encoding" in content:  # a multipart field not named here is refused
                content["schema"]["additionalProperties"] = False
    multipart = doc["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]
    multipart["encoding"]["image"] = {"contentType": "image/*"}
    doc["paths"]["/classify"]["post"]["requestBody"]["content"]["image/*"] = {
        "schema": {"type": "string", "format": "binary", "minLength": 1, "maxLength": limit}
    }
    doc["paths"]["/classify"]["post"]["parameters"] = [TOP_K_QUERY]
    batch = doc["paths"]["/classify_batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    batch["encoding"]["images"] = {"contentType": "image/*"}
    batch["schema"]["properties"]["images"]["maxItems"] = settings.max_batch_images
    html = {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}
    doc["paths"]["/"] = {"get": {"tags": ["Web"], "description": "The web page.", "responses": {"200": html}}}
    doc["paths"]["/docs"] = {
        "get": {"tags": ["Web"], "description": "This document, as a page.", "responses": {"200": html}}
    }
    info_schema, info_parts = openapi_schema(ServiceInfo)
    info_schema["properties"].pop("schema_version", None)
    info_schema["required"] = [name for name in info_schema.get("required", []) if name != "schema_version"]
    doc["paths"]["/info"] = {
        "get": {
            "tags": ["Web"],
            "description": "The served model: name, version, aliases, test metrics, classes, input, limits.",
            "responses": {
                "200": {"description": "Model facts.", "content": {"application/json": {"schema": info_schema}}}
            },
        }
    }
    doc["info"]["description"] = (
        f"Image classification with one registered model version. Limits: bodies up to {limit} bytes, "
        f"{settings.max_batch_images} images per batch, {settings.max_image_pixels} pixels per image; "
        f"a body must arrive within {BODY_TIMEOUT_S:g} s."
    )
    drift_schema, drift_parts = openapi_schema(ServedDrift)
    doc["paths"]["/drift"] = {
        "get": {
            "tags": ["Web"],
            "description": (
                "The drift verdict on the window of served traffic against the model's own reference: "
                "KS per principal component of the embeddings (Benjamini-Hochberg), chi-square of the "
                "predicted classes, KS of the confidence, joined by Bonferroni. Below the minimum window, "
                "or without a reference, `verdict.status` says so and there is no p-value."
            ),
            "responses": {
                "200": {"description": "The verdict.", "content": {"application/json": {"schema": drift_schema}}}
            },
        }
    }
    schemas = {**doc["components"]["schemas"], **info_parts, **drift_parts, "Error": ERROR_SCHEMA}
    used = set(references(doc["paths"], schemas))
    doc["components"]["schemas"] = {name: schema for name, schema in schemas.items() if f"{COMPONENTS}{name}" in used}
    return doc


def openapi_schema(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pydantic model's JSON schema as OpenAPI 3.0 says it (`nullable`, not a null type), and
    the component schemas it refers to."""
    schema = model.model_json_schema(ref_template=COMPONENTS + "{model}", mode="serialization")
    parts = schema.pop("$defs", {})
    return as_openapi_30(schema), {name: as_openapi_30(part) for name, part in parts.items()}


def as_openapi_30(node: Any) -> Any:
    if isinstance(node, list):
        return [as_openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: as_openapi_30(value) for key, value in node.items()}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "$ref" in rest[0]:
            node["allOf"] = rest  # OpenAPI 3.0 ignores siblings of a $ref
        elif len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    return node


def references(paths: Any, schemas: dict[str, Any]) -> Iterator[str]:
    """Every component reference reachable from the paths, through the components they name."""
    seen: set[str] = set()
    stack = [paths]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in seen:
                seen.add(ref)
                yield ref
                stack.append(schemas.get(ref.removeprefix(COMPONENTS), {}))
            stack.extend(value for key, value in node.items() if key != "$ref")
        elif isinstance(node, list):
            stack.extend(node)


# The decorators made Classifier a bentoml Service; mypy does not apply class decorators.
SERVICE = cast("bentoml.Service[Classifier]", Classifier)
use_traffic_timeout()  # before `bentoml serve` builds the app from SERVICE
SERVICE.add_asgi_middleware(
    RequestGuard, limit=lambda: serve_config().max_request_bytes, routes=lambda: guarded_routes(serve_config())
)
SERVICE.add_asgi_middleware(RawImageUploads)
