"""A no-op endpoint on the cnnops service's stack, for bench/serve.py only: the transport's limit.

`POST /classify` takes the same multipart field `image` through the same BentoML version, worker
count, traffic timeout, access-log setting and `serving.limits.RequestGuard` as the real service,
reads the upload, and answers a constant JSON: no decode, no batcher, no model. What the real
service reaches against this is what its own work costs on top of the HTTP stack.

    bentoml serve bench.noop_service:Noop --host 127.0.0.1 --port PORT
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import bentoml
from bentoml.validators import ContentType

from cnnops.serving.limits import RequestGuard, RouteRules
from cnnops.settings.config import ServeConfig

ImageFile = Annotated[Path, ContentType("image/*")]
ANSWER = {"predictions": [{"label": "noop", "probability": 1.0}]}


def guarded_routes() -> dict[str, RouteRules]:
    """The rules the real service's guard applies to a multipart `/classify` upload."""
    return {
        "/classify": RouteRules(
            media_types=("multipart/form-data",), file_fields={"image": 1}, text_fields=frozenset({"top_k"})
        )
    }


@bentoml.service(name="cnnops-noop", workers=1, traffic={"timeout": 60}, logging={"access": {"enabled": False}})
class Noop:
    """Read one uploaded image and answer a constant."""

    @bentoml.api(route="/classify")
    async def classify(self, image: ImageFile) -> dict[str, Any]:
        """Read the upload (as the real endpoint does before decoding it) and answer a constant."""
        image.read_bytes()
        return ANSWER


# The decorator made Noop a bentoml Service; mypy does not apply class decorators.
cast("bentoml.Service[Noop]", Noop).add_asgi_middleware(
    RequestGuard, limit=lambda: ServeConfig().max_request_bytes, routes=guarded_routes
)
