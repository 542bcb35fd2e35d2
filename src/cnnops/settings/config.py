"""One typed, frozen configuration: defaults in code, YAML file on top, CLI overrides on top of that.

Unknown keys are rejected so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnnops.core.errors import CnnopsError

# The model zoo's names (each one a builder in cnnops.modeling.builders) and the augmentation presets.
Architecture = Literal["simple-cnn", "deep-cnn", "mobilenet_v2", "vgg16", "resnet50", "efficientnet_b0"]
Augmentation = Literal["none", "light", "strong"]


class _Section(BaseModel):
    # coerce_numbers_to_str: `model_name: 2024` in YAML means the string "2024".
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)


class DataConfig(_Section):
    """Where the images come from and how they are read."""

    source: str = Field(
        default="demo:animals",
        description="A `demo:` name, a class-folder tree, a labels table, a .npy folder, a DataFrame or an archive.",
    )
    image_size: int | None = Field(
        default=None,
        ge=8,
        le=1024,
        description="Square side the model takes; null: the images' own size when they share one (<=256), else 128.",
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Images with more pixels than this are quarantined (decompression bombs)."
    )
    max_per_class: int | None = Field(
        default=None, ge=1, description="Keep at most this many images per class of a .npy or DataFrame source."
    )
    trust_pickle: bool = Field(
        default=False, description="Read a .pkl DataFrame (--trust-pickle): unpickling runs the file's code."
    )


class SplitConfig(_Section):
    """Fractions of each class in train, val and test; they must sum to 1."""

    train: float = Field(default=0.8, gt=0, lt=1, description="Share of each class that is trained on.")
    val: float = Field(default=0.1, gt=0, lt=1, description="Share that early stopping and the sweep judge by.")
    test: float = Field(default=0.1, gt=0, lt=1, description="Share that evaluation and the gate score on.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        return self


class ValidateConfig(_Section):
    """The validate step's thresholds: its verdict is pass, warn (the run goes on) or fail (it stops)."""

    min_images_per_class: int = Field(default=10, ge=1, description="Fewer images than this in a class fails.")
    max_imbalance: float = Field(default=10.0, ge=1, description="Largest class over smallest class above this warns.")
    max_quarantined_warn: float = Field(
        default=0.05, ge=0, le=1, description="Share of files quarantined above which validation warns."
    )
    max_quarantined_fail: float = Field(
        default=0.5, ge=0, le=1, description="Share of files quarantined above which validation fails."
    )
    near_duplicate_bits: int = Field(
        default=3, ge=0, le=16, description="Perceptual hashes within this many bits (of 64) are near-duplicates."
    )
    max_near_duplicate_share: float = Field(
        default=0.10, ge=0, le=1, description="Share of images in near-duplicate groups above which validation warns."
    )


class TrainConfig(_Section):
    """The model, its recipe and its training phases."""

    architecture: Architecture = Field(
        default="simple-cnn",
        description="The model builder (cnnops.modeling.builders): a scratch net or a keras backbone.",
    )
    weights: str = Field(
        default="none",
        description="Backbones only: none, imagenet (downloads; needs internet) or a local weights file.",
    )
    trainable_layers: int | None = Field(
        default=None,
        ge=0,
        description="Backbones only: null freezes the backbone; N leaves its last N layers trainable.",
    )
    working_size: int | None = Field(
        default=None,
        ge=8,
        le=1024,
        description="Side the model resizes its input to; null: the input size (scratch nets) or 224 (backbones).",
    )
    augmentation: Augmentation = Field(
        default="none",
        description="Preset of flips, rotations, zooms, shifts, contrast and brightness, active in training only.",
    )
    augment: dict[Literal["flip", "rotation", "zoom", "translation", "contrast", "brightness"], float] = Field(
        default={},
        description='Per-layer strength over the preset, e.g. {"rotation": 0.05, "flip": 0}; 0 turns a layer off.',
    )
    lr_schedule: Literal["plateau", "cosine"] = Field(
        default="plateau",
        description="plateau halves the rate when val loss stalls; cosine decays it to zero over the epochs.",
    )
    epochs: int = Field(default=20, ge=1, description="Most epochs of the first (or only) phase.")
    batch_size: int | None = Field(
        default=None, ge=1, description="null: sized to the train split, up to 64 with 10 full batches an epoch."
    )
    learning_rate: float = Field(default=2e-3, gt=0, description="The optimizer's starting rate.")
    patience: int | None = Field(
        default=None,
        ge=1,
        description="Epochs without a val-loss gain before early stopping (the rate halves after half of them); "
        "null: at least 4 epochs and 50 steps.",
    )
    min_steps: int = Field(
        default=100, ge=0, description="Early stopping may not end training before this many optimizer steps."
    )
    recalibrate_batchnorm: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Recompute the scratch nets' batchnorm statistics from train images before each validation; "
        "auto: when an epoch has fewer than 100 steps.",
    )
    fine_tune_epochs: int = Field(
        default=0, ge=0, description="Backbones only: epochs of a second phase with the backbone unfrozen (0: none)."
    )
    fine_tune_layers: int | None = Field(
        default=None, ge=1, description="The second phase unfreezes the backbone's last N layers (null: all of it)."
    )
    fine_tune_lr_factor: float = Field(
        default=0.1, gt=0, le=1, description="The second phase trains at learning_rate times this."
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="float32", description="mixed_* compute in 16 bits with float32 weights (GPUs with tensor cores)."
    )
    jit_compile: bool = Field(default=False, description="Compile the train step with XLA (seeded, not bit-for-bit).")


class SweepConfig(_Section):
    """Candidates are every combination of these lists; an empty list keeps the train section's value.

    With one candidate in all, there is no sweep: a single training run.
    """

    architecture: list[Architecture] = Field(default=[], description="Architectures to try.")
    learning_rate: list[Annotated[float, Field(gt=0)]] = Field(default=[], description="Learning rates to try.")
    augmentation: list[Augmentation] = Field(default=[], description="Augmentation presets to try.")
    metric: Literal["val_accuracy", "val_loss"] = Field(
        default="val_accuracy", description="The candidate with the best value of this on the val split wins."
    )
    parent_run: str = Field(
        default="", description="Set by plan-sweep on each candidate: the MLflow parent run it logs under."
    )


class DistillConfig(_Section):
    """Knowledge distillation: every trained model learns from a teacher's softened probabilities too."""

    teacher: str = Field(
        default="",
        description="A model folder (such as a sweep's selected model), NAME@ALIAS or NAME:VERSION; "
        "empty: no distillation.",
    )
    alpha: float = Field(
        default=0.3, ge=0, le=1, description="Weight of the true labels against the teacher's probabilities."
    )
    temperature: float = Field(default=4.0, gt=0, description="Softening of both distributions (1: none).")


class GateConfig(_Section):
    """What a candidate must show, on the test split, to become champion."""

    metric: Literal["accuracy", "macro_f1"] = Field(default="accuracy", description="The score the gate compares.")
    margin: float = Field(
        default=0.005, ge=0, le=1, description="Beat the champion by at least this much on the same test images."
    )
    test: Literal["paired", "none"] = Field(
        default="paired",
        description="paired: shown better than the champion with `confidence` (exact McNemar test and a bootstrap "
        "interval on the same images); none: a higher score by the margin is enough.",
    )
    confidence: float = Field(
        default=0.95, ge=0.5, lt=1, description="McNemar p below 1 - this, and the interval at this level above zero."
    )
    floor: float = Field(default=0.5, ge=0, le=1, description="The least score a champion may have.")
    min_over_chance: float = Field(
        default=0.05, ge=0, le=1, description="Beat always answering the test split's most common class by this much."
    )
    must_beat_baselines: bool = Field(
        default=True, description="Not below the best baseline on the same test split by more than the tolerance."
    )
    baseline_tolerance: float = Field(
        default=0.0, ge=0, le=1, description="How far below the best baseline is allowed."
    )
    force_promote: bool = Field(
        default=False, description="Skip the champion comparison (chance, the floor and the baselines still apply)."
    )


class RegistryConfig(_Section):
    """The MLflow registered model the pipeline registers into."""

    model_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="null: derived from the data source, so two datasets never share a registered model.",
    )


class RetrainConfig(_Section):
    """When `cnnops retrain` may train again: how soon after the last retrain, and how long it
    waits for another retrain of the same model to finish."""

    cooldown_minutes: float = Field(
        default=60,
        ge=0,
        description="No retrain of a model within this many minutes of its last one, unless --force (0: none).",
    )
    wait_minutes: float = Field(
        default=120,
        gt=0,
        description="How long a retrain waits for another retrain of the same model before it gives up.",
    )


class ServeConfig(_Section):
    """The service's limits, which `cnnops serve` passes to it."""

    runtime: Literal["auto", "onnx", "keras"] = Field(
        default="auto",
        description=(
            "What runs the model: onnx (ONNX Runtime, no TensorFlow in the service) needs an export that passed "
            "parity, and a version without one stays challenger; keras runs the Keras model; auto runs ONNX when "
            "the export passed and Keras otherwise, with the reason in /info."
        ),
    )
    onnx_threads: int = Field(
        default=1,
        ge=0,
        le=256,
        description=(
            "Threads ONNX Runtime gives one model call (0: one per physical core). Requests already run side by "
            "side, decoding in threads while the batcher calls the model; on two cores one thread served 1.35x "
            "the batch images/s of ONNX Runtime's default. Raise it for a large backbone on many cores."
        ),
    )
    max_request_mb: float = Field(
        default=10, gt=0, le=1024, description="A request body over this is refused with 413 before it is parsed."
    )
    max_image_pixels: int = Field(
        default=25_000_000,
        ge=1,
        description="A served image with more pixels than this is a 400 (decompression bombs).",
    )
    max_batch_images: int = Field(default=32, ge=1, le=1024, description="Most images one batch request may carry.")
    top_k: int = Field(
        default=5, ge=1, description="Classes returned per image unless the request asks for another number."
    )
    keep_samples: bool = Field(
        default=False,
        description="Keep a rate-limited sample of served images for labelling; off, no served image is kept.",
    )
    samples_per_minute: float = Field(
        default=6, gt=0, le=6000, description="With keep_samples: at most this many images kept per minute."
    )
    max_samples: int = Field(
        default=1000, ge=1, le=1_000_000, description="With keep_samples: the oldest go past this many images."
    )
    max_samples_mb: float = Field(
        default=200, gt=0, le=1_000_000, description="With keep_samples: the oldest go past this much disk."
    )

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)


class ExportConfig(_Section):
    """How closely an exported model must answer as the Keras model does before it is used."""

    max_abs_diff: float = Field(
        default=1e-4, ge=0, le=1, description="Largest difference allowed in any class probability of any test image."
    )
    min_top1_agreement: float = Field(
        default=1.0, ge=0, le=1, description="Share of test images whose most likely class must be the same."
    )
    parity_images: int = Field(
        default=64, ge=1, le=4096, description="Test images evaluation keeps to check every export on."
    )


class InfraValidationConfig(_Section):
    """How a champion's Bento is proven in a real server before the alias moves to it."""

    ready_timeout_s: float = Field(
        default=180, gt=0, le=3600, description="The server must answer /readyz within this many seconds."
    )
    request_timeout_s: float = Field(default=30, gt=0, le=600, description="Each canary request's time limit.")
    canaries: int = Field(
        default=16, ge=1, le=256, description="Test images served, at most this many, spread over the classes."
    )
    tolerance: float = Field(
        default=1e-5, gt=0, le=0.1, description="Served probabilities may differ from the evaluation's by this much."
    )


class DriftConfig(_Section):
    """How the service keeps its window of served traffic and judges it against the reference."""

    record: bool = Field(
        default=True, description="Keep the window of served traffic; off, /drift gives no verdict and says why."
    )
    window_size: int = Field(
        default=300, ge=10, le=100_000, description="Most recent requests kept in the window; older ones drop out."
    )
    max_age_s: float = Field(
        default=86_400, gt=0, description="A request older than this many seconds leaves the window."
    )
    min_window: int = Field(
        default=100, ge=10, description="Below this many requests in the window there is no verdict, only a count."
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=1, description="Drift is reported when the joint p-value is below this."
    )
    max_components: int = Field(
        default=10, ge=1, le=256, description="Most principal components of the embeddings tested, one KS test each."
    )
    explained_variance: float = Field(
        default=0.9, gt=0, le=1, description="Components are kept until they explain this share of the variance."
    )

    @model_validator(mode="after")
    def _a_full_window_is_judged(self) -> DriftConfig:
        if self.min_window > self.window_size:
            raise ValueError(
                f"drift.min_window {self.min_window} is over drift.window_size {self.window_size}: "
                "the window could never hold enough requests for a verdict"
            )
        return self


class Config(_Section):
    """The whole configuration: defaults here, a YAML file (--config) on top, then --set and the named flags."""

    seed: int = Field(
        default=42, description="Seeds the split, training and the baselines: the same seed gives the same metrics."
    )
    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    validation: ValidateConfig = ValidateConfig()
    train: TrainConfig = TrainConfig()
    sweep: SweepConfig = SweepConfig()
    distill: DistillConfig = DistillConfig()
    gate: GateConfig = GateConfig()
    registry: RegistryConfig = RegistryConfig()
    retrain: RetrainConfig = RetrainConfig()
    serve: ServeConfig = ServeConfig()
    export: ExportConfig = ExportConfig()
    infra_validation: InfraValidationConfig = InfraValidationConfig()
    drift: DriftConfig = DriftConfig()


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
