"""One typed, frozen configuration: defaults in code, YAML file on top, CLI overrides on top of that.

Unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnnops.errors import CnnopsError

# The model zoo's names (each one a builder in cnnops.model) and the augmentation presets.
Architecture = Literal["simple-cnn", "deep-cnn", "mobilenet_v2", "vgg16", "resnet50", "efficientnet_b0"]
Augmentation = Literal["none", "light", "strong"]


class _Section(BaseModel):
    # coerce_numbers_to_str: `model_name: 2024` in YAML means the string "2024".
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class DataConfig(_Section):
    source: str = "demo:animals"
    # Square side the model takes; None picks the dataset's own size when all images share one.
    image_size: int | None = Field(default=None, ge=8, le=1024)
    # Decompression-bomb guard: images with more pixels than this are quarantined.
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # Keep at most this many images per class from a .npy or DataFrame source (None: all).
    max_per_class: int | None = Field(default=None, ge=1)
    # Unpickling runs code: a .pkl DataFrame is read only when this is set (--trust-pickle).
    trust_pickle: bool = False


class SplitConfig(_Section):
    train: float = Field(default=0.8, gt=0, lt=1)
    val: float = Field(default=0.1, gt=0, lt=1)
    test: float = Field(default=0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class ValidateConfig(_Section):
    # Fewer images than this in a class fails validation.
    min_images_per_class: int = Field(default=10, ge=1)
    # Largest class over smallest class above this warns.
    max_imbalance: float = Field(default=10.0, ge=1)
    # Share of files quarantined: above the first warns, above the second fails.
    max_quarantined_warn: float = Field(default=0.05, ge=0, le=1)
    max_quarantined_fail: float = Field(default=0.5, ge=0, le=1)
    # Perceptual hashes within this many bits (of 64) make a near-duplicate group.
    near_duplicate_bits: int = Field(default=3, ge=0, le=16)
    # Share of images in near-duplicate groups above this warns.
    max_near_duplicate_share: float = Field(default=0.10, ge=0, le=1)


class TrainConfig(_Section):
    architecture: Architecture = "simple-cnn"
    # Backbones only: "none", "imagenet" (downloads; needs internet) or a local weights file.
    weights: str = "none"
    # Backbones only: None freezes the whole backbone; N leaves its last N layers trainable.
    trainable_layers: int | None = Field(default=None, ge=0)
    # Side the model resizes its input to; None: the input size (scratch nets) or 224 (backbones).
    working_size: int | None = Field(default=None, ge=8, le=1024)
    # Random flips, rotations, zooms, shifts, contrast and brightness, active in training only.
    augmentation: Augmentation = "none"
    # Per-layer strength over the preset, e.g. {"rotation": 0.05, "flip": 0}; 0 turns a layer off.
    augment: dict[Literal["flip", "rotation", "zoom", "translation", "contrast", "brightness"], float] = {}
    # "plateau" halves the rate when val loss stalls; "cosine" decays it to zero over the epochs.
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    epochs: int = Field(default=20, ge=1)
    # None sizes it to the train split (cnnops.recipe): up to 64, with 10 full batches an epoch.
    batch_size: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    # Epochs without a val-loss gain before early stopping; None: at least 4 epochs and 50 steps.
    patience: int | None = Field(default=None, ge=1)
    # Early stopping may not end training before this many optimizer steps.
    min_steps: int = Field(default=100, ge=0)
    # Recompute the scratch nets' batchnorm statistics from the train images before each
    # validation: "auto" does it when an epoch has too few steps for the moving averages to settle.
    recalibrate_batchnorm: Literal["auto", "always", "never"] = "auto"
    # Backbones only: after the head is trained, unfreeze and go on for this many epochs (0: no phase 2)
    fine_tune_epochs: int = Field(default=0, ge=0)
    # Phase 2 unfreezes the backbone's last N layers (None: all of it) ...
    fine_tune_layers: int | None = Field(default=None, ge=1)
    # ... and trains at learning_rate times this.
    fine_tune_lr_factor: float = Field(default=0.1, gt=0, le=1)
    # mixed_* compute in 16 bits with float32 weights: faster on GPUs with tensor cores.
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    # Compile the train step with XLA.
    jit_compile: bool = False


class SweepConfig(_Section):
    # Candidates are every combination of these lists; an empty list keeps the train section's value.
    # With one candidate in all, there is no sweep: a single training run.
    architecture: list[Architecture] = []
    learning_rate: list[Annotated[float, Field(gt=0)]] = []
    augmentation: list[Augmentation] = []
    # The candidate with the best value of this on the val split wins the sweep.
    metric: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    # Set by the sweep on each candidate's config: the MLflow run the candidate logs under as a child.
    parent_run: str = ""


class DistillConfig(_Section):
    # Teacher to distil every trained model from: a model folder (e.g. a sweep's selected model),
    # NAME@ALIAS or NAME:VERSION of a registered model. Empty: no distillation.
    teacher: str = ""
    # Weight of the true labels against the teacher's softened probabilities.
    alpha: float = Field(default=0.3, ge=0, le=1)
    # Softening of both distributions (1: none).
    temperature: float = Field(default=4.0, gt=0)


class GateConfig(_Section):
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    # The candidate must beat the champion by at least this much on the same test images.
    margin: float = Field(default=0.005, ge=0, le=1)
    # "paired": better than the champion only with `confidence` (exact McNemar test and a bootstrap
    # interval on the same images); "none": a higher score by the margin is enough.
    test: Literal["paired", "none"] = "paired"
    confidence: float = Field(default=0.95, ge=0.5, lt=1)
    # It must reach this absolute score to be champion at all ...
    floor: float = Field(default=0.5, ge=0, le=1)
    # ... beat always answering the test split's most common class by this much ...
    min_over_chance: float = Field(default=0.05, ge=0, le=1)
    # ... and not score below the best baseline on the same test split by more than the tolerance.
    must_beat_baselines: bool = True
    baseline_tolerance: float = Field(default=0.0, ge=0, le=1)
    force_promote: bool = False


class RegistryConfig(_Section):
    # None derives a name from the data source so two datasets never share a registered model.
    model_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ServeConfig(_Section):
    # A request body over this is refused with 413 before it is parsed.
    max_request_mb: float = Field(default=10, gt=0, le=1024)
    # Decompression-bomb guard for served images: more pixels than this is a 400.
    max_image_pixels: int = Field(default=25_000_000, ge=1)
    # Most images one batch request may carry.
    max_batch_images: int = Field(default=32, ge=1, le=1024)
    # Classes returned per image unless the request asks for another number.
    top_k: int = Field(default=5, ge=1)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


class Config(_Section):
    seed: int = 42
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidateConfig = ValidateConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    distill: DistillConfig = DistillConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()


def build_config(file: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Resolve defaults, then the YAML file, then dotted overrides (`train.epochs=3`)."""
    raw: dict[str, Any] = {}
    if file is not None:
        raw = read_yaml(file)
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return validate_config(raw)


def validate_config(raw: dict[str, Any]) -> Config:
    """Validate a plain dict (a YAML file, a pipeline parameter) into a Config, as one readable line."""
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(_describe(e) for e in err.errors())
        raise CnnopsError(f"invalid config: {problems}. See `cnnops run --help` for the keys.") from None


def read_yaml(file: Path) -> dict[str, Any]:
    """Read a config file; a missing or malformed file is a user error, not a traceback."""
    if not file.is_file():
        raise CnnopsError(f"config file {file} does not exist; pass an existing YAML file to --config.")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise CnnopsError(f"config file {file} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise CnnopsError(f"config file {file} must hold a mapping of sections, not {type(raw).__name__}.")
    return raw


NULL_WORDS = frozenset({"", "null", "none", "~"})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn `--set section.key=value` strings into a dict.

    Values stay strings (the typed config converts "3", "0.5", "true"), so `model_name=2024` and
    `source=off` mean what they say; "null" or an empty value means None.
    """
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CnnopsError(f"--set expects section.key=value, got {pair!r}.")
        parsed[key.strip()] = None if value.strip().lower() in NULL_WORDS else value.strip()
    return parsed


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` inside nested dicts, creating the sections on the way."""
    *sections, leaf = dotted.split(".")
    node = raw
    for section in sections:
        child = node.setdefault(section, {})
        if not isinstance(child, dict):
            raise CnnopsError(f"cannot set {dotted}: {section} is not a section.")
        node = child
    node[leaf] = value


def flatten_config(config: Config) -> dict[str, Any]:
    """`{"train.epochs": 30, ...}`: the shape MLflow params want."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(f"{name}.", value)
            else:
                flat[name] = value

    walk("", config.model_dump(mode="json"))
    return flat


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"unknown key '{where}'"
    return f"{where}: {error['msg']}"


def to_pipeline_parameter(config: Config) -> dict[str, Any]:
    """The config as a kfp `dict` parameter. kfp structs cannot hold null; every None here is a
    default, so dropping them round-trips through `validate_config` exactly.
    """
    return config.model_dump(mode="json", exclude_none=True)
