"""The names cnnops uses in the registry: the registered-model name rule (the configured name, else
one derived from the data source, so that each source trains, gates and serves its own model) and
the two aliases the gate hands out."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Final, Literal

from cnnops.settings.config import Config

# A data source that names a built-in demo set: `demo:animals`.
DEMO_PREFIX = "demo:"

Alias = Literal["champion", "challenger"]
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


def model_name_for(config: Config, source: str | None = None) -> str:
    """The configured registered-model name, else one derived from the data source (by default
    the config's; pass the ingested dataset's source when there is one)."""
    return config.registry.model_name or default_model_name(source or config.data.source)


def default_model_name(spec: str) -> str:
    """A registered-model name unique to the data source: demo name, or folder name plus path hash."""
    if spec.startswith(DEMO_PREFIX):
        return f"cnnops-{slug(spec[len(DEMO_PREFIX) :])}"
    path = Path(spec).expanduser().resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"cnnops-{slug(path.name) or 'data'}-{digest}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
