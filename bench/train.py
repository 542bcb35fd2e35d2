"""Training throughput: images/s of `model.fit` for the project's models, precisions, XLA on/off and
input paths, on one machine in one run.

    .venv/bin/python bench/train.py [--quick] [--models ...] [--precisions fp32 mixed] [--xla both]
        [--steps N|MODEL=N ...] [--warmup N|MODEL=N ...] [--batch N|MODEL=N ...] [--repeats N|MODEL=N ...]
        [--images 4096] [--sections models input] [--out FILE]
    KERAS_BACKEND=jax PYTHONPATH=src python bench/train.py ...        # a GPU machine without TensorFlow

Sections:
  models  `simple-cnn` on 28x28 grey, `mobilenet_v2` and `resnet50` on 224x224 RGB (weights none,
          the whole network trainable unless --trainable frozen), each at fp32 and under the mixed
          policy (--mixed-policy, mixed_bfloat16 by default), each with `jit_compile` off and on.
          The policy is set with keras.mixed_precision.set_global_policy before the model is built
          and restored after. Batches come from memory: tf.data from_tensor_slices over numpy arrays
          on TensorFlow, numpy batches from a Python generator on JAX. With JAX, XLA is always on
          (--xla off there means eager, op-by-op JAX, so it is not run unless asked for).
  input   `simple-cnn` at fp32 (jit_compile "auto", as `cnnops train` compiles) fed three ways:
          (a) tf.data: the project's `cnnops.modeling.inputs.make_dataset` over N synthetic PNG files in a
              temporary folder (manifest with sha256, shuffled as training does), measured after
              one full untimed pass has filled its decoded-array cache, i.e. what every epoch from
              the second on costs in real training (the first pass is reported apart);
          (b) in-memory: the same decoded uint8 arrays via from_tensor_slices().shuffle().batch()
              .prefetch() (TensorFlow) or a numpy generator (JAX);
          (c) generator: a keras.utils.PyDataset in the old ImageDataGenerator tutorial's manner:
              per batch it opens each file with PIL, converts, resizes if needed, makes a float32
              array and rescales it by 1/255 in numpy, with no cache and Keras' defaults (workers=1,
              no multiprocessing: on TensorFlow Keras runs it in one tf.data from_generator thread
              with prefetch, on JAX inline in the training loop). The model takes uint8 pixels and
              rescales inside, so the loader finally turns the rescaled floats back into uint8 (a
              vectorised numpy step, a few percent of the loader's time; it only makes this baseline
              slower, not the tf.data path faster).
          Same model (same seed and initial weights), batch, steps and warm-up for the three; the
          timed runs are interleaved (a, b, c, a, b, c, ...) so a load change on a shared machine
          hits all three alike. After each timed fit the same source is also read alone, with no
          model ("input alone": max(steps, one pass) batches pulled back to back), which shows what
          each path could feed; the training figure is the lower of that and the model's own speed.
          On JAX (no TensorFlow) only (b) and (c) run.

What is timed: for every configuration a fresh model is built and compiled (Adam, sparse
categorical cross-entropy, accuracy, as `cnnops train`), then `model.fit(..., steps_per_epoch=
--warmup)` runs untimed (tracing, XLA compilation, autotuning, allocator warm-up), then
`model.fit(..., steps_per_epoch=--steps)` runs --repeats times on the same endless dataset. Each
timed fit is clocked from its first `on_train_batch_begin` (fit's per-call setup before it,
data adapter and iterator creation, is outside) to its `on_epoch_end`, which Keras calls only
after turning the epoch's metrics into Python floats, so every step's computation has finished
(no per-step sync: the timer defines no on_train_batch_end, which would make Keras wait after
each step). Batch fetching, the
forward and backward pass and the optimizer update are all inside. images/s = steps * batch /
seconds; the tables give the median over the repeats. Every batch is full (N is rounded up to a
multiple of the batch) so no step has a different shape. The synthetic images (four shape classes
at random place, size and colour, plus noise) are learnable: the loss after each timed fit is
recorded, and falls. --quick is a smoke mode (simple-cnn unless --models says otherwise, a few
steps); its figures are not measurements.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("simple-cnn", "deep-cnn")  # 28x28 grey; every other architecture gets 224x224 RGB
KNOWN_MODELS = ("simple-cnn", "deep-cnn", "mobilenet_v2", "resnet50", "vgg16", "efficientnet_b0")
SHAPES = ("square", "disk", "hbar", "vbar")  # the synthetic classes
# (batch, warmup steps, timed steps, repeats) for 28x28 and 224 models, by device kind.
DEFAULTS = {
    "cpu": {"small": (128, 10, 100, 3), "big": (32, 2, 10, 1)},
    "gpu": {"small": (128, 20, 500, 3), "big": (128, 10, 100, 3)},
    "quick": {"small": (128, 2, 5, 1), "big": (8, 1, 2, 1)},
}
ENV_KEYS = (
    "KERAS_BACKEND",
    "PYTHONPATH",
    "XLA_FLAGS",
    "TF_XLA_FLAGS",
    "TF_ENABLE_ONEDNN_OPTS",
    "CUDA_VISIBLE_DEVICES",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "OMP_NUM_THREADS",
)


# ---------------------------------------------------------------------------------------------
# imports that depend on the machine


def import_cnnops_model() -> Any:
    """cnnops.modeling.builders, from the installed package or from src/ (PYTHONPATH=src works too); it needs
    only keras and numpy, so it imports on a bare GPU machine."""
    try:
        import cnnops  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
    import cnnops.modeling.builders as model_module

    return model_module


# ---------------------------------------------------------------------------------------------
# data


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(backend: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Hardware and versions for the results file, and whether an accelerator is in use."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, Any] = {"python": platform.python_version()}
    for package in ("keras", "numpy", "pillow", *(("jax", "jaxlib") if backend == "jax" else (backend,))):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    hardware: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    if backend == "jax":
        import jax

        devices = jax.devices()
        hardware["jax_default_backend"] = jax.default_backend()
        hardware["jax_devices"] = [str(device) for device in devices]
        hardware["gpus"] = [device.device_kind for device in devices if device.platform == "gpu"]
    else:
        import tensorflow as tf

        physical = tf.config.list_physical_devices()
        hardware["tf_physical_devices"] = [f"{d.device_type}:{d.name}" for d in physical]
        hardware["gpus"] = [
            tf.config.experimental.get_device_details(d).get("device_name", d.name)
            for d in physical
            if d.device_type == "GPU"
        ]
    return hardware, versions, bool(hardware["gpus"])


def synthetic_images(n: int, height: int, width: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n learnable uint8 images: one of four shapes (the class) at a random place, size and colour,
    over a dark background, with Gaussian noise. Labels are class indices into SHAPES."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int32) % len(SHAPES)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    out = np.empty((n, height, width, channels), dtype=np.uint8)
    for start in range(0, n, 64):
        k = min(64, n - start)
        cy, cx = rng.uniform(0.3, 0.7, (2, k, 1, 1)).astype(np.float32)
        r = rng.uniform(0.12, 0.25, (k, 1, 1)).astype(np.float32)
        dy, dx = np.abs(yy - cy), np.abs(xx - cx)
        masks = np.stack(
            [np.maximum(dy, dx) < r, dy**2 + dx**2 < r**2, (dy < r / 3) & (dx < r * 1.6), (dx < r / 3) & (dy < r * 1.6)]
        )
        mask = masks[labels[start : start + k], np.arange(k)][..., None]
        fg = rng.uniform(150, 255, (k, 1, 1, channels)).astype(np.float32)
        bg = rng.uniform(0, 80, (k, 1, 1, channels)).astype(np.float32)
        noisy = np.where(mask, fg, bg) + rng.normal(0, 20, (k, height, width, channels)).astype(np.float32)
        out[start : start + k] = np.clip(noisy, 0, 255).astype(np.uint8)
    return out, labels


def write_png_dataset(folder: Path, pixels: np.ndarray, labels: np.ndarray) -> list[dict[str, str]]:
    """The images as PNG files in class folders, and the manifest rows (path, label, sha256)."""
    from PIL import Image

    from cnnops.data.images import sha256_bytes

    rows = []
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        path = folder / SHAPES[label] / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(path)
        rows.append({"path": str(path), "label": SHAPES[label], "sha256": sha256_bytes(path.read_bytes())})
    return rows


def decode_files(paths: list[str], mode: str, size: tuple[int, int]) -> np.ndarray:
    """The files through the project's one decode function: the arrays tf.data caches."""
    from cnnops.data.images import decode_image

    return np.stack([decode_image(Path(p).read_bytes(), mode, size).pixels for p in paths])


def numpy_batches(pixels: np.ndarray, labels: np.ndarray, batch: int, seed: int) -> Iterator[tuple[np.ndarray, ...]]:
    """Endless full batches from arrays in memory, reshuffled every pass (as fit(x, y) would)."""
    rng = np.random.default_rng(seed)
    per_pass = len(pixels) // batch
    while True:
        order = rng.permutation(len(pixels))
        for k in range(per_pass):
            idx = order[k * batch : (k + 1) * batch]
            yield pixels[idx], labels[idx]


def memory_source(
    backend: str, pixels: np.ndarray, labels: np.ndarray, batch: int, seed: int, shuffle: bool
) -> Callable[[], Any]:
    """A factory of endless batches from memory, one call per fit."""
    if backend == "tensorflow":
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((pixels, labels))
        if shuffle:
            ds = ds.shuffle(len(pixels), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE).repeat()
        return lambda: ds
    return lambda: numpy_batches(pixels, labels, batch, seed)


def tutorial_loader_class() -> type:
    import keras
    from PIL import Image

    class TutorialLoader(keras.utils.PyDataset):
        """ImageDataGenerator.flow_from_directory in spirit: every batch is read from disk anew
        with PIL in Python, shuffled each pass; workers=1, no multiprocessing (Keras' defaults)."""

        def __init__(
            self, paths: list[str], labels: np.ndarray, batch: int, mode: str, size: tuple[int, int], seed: int
        ) -> None:
            super().__init__()
            self.paths, self.labels, self.batch, self.mode = paths, labels, batch, mode
            self.height, self.width = size
            self.channels = 1 if mode == "L" else 3
            self.per_pass = len(paths) // batch
            self.rng = np.random.default_rng(seed)
            self.orders: dict[int, np.ndarray] = {}

        @property
        def num_batches(self) -> int | None:
            return None  # endless: batch i is batch i % per_pass of pass i // per_pass

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            pass_no, k = divmod(index, self.per_pass)
            if pass_no not in self.orders:
                self.orders = {pass_no: self.rng.permutation(len(self.paths))}
            idx = self.orders[pass_no][k * self.batch : (k + 1) * self.batch]
            x = np.empty((len(idx), self.height, self.width, self.channels), dtype=np.float32)
            for j, i in enumerate(idx):
                with Image.open(self.paths[i]) as img:  # keras.utils.load_img + img_to_array
                    img = img.convert(self.mode)
                    if img.size != (self.width, self.height):
                        img = img.resize((self.width, self.height), Image.Resampling.NEAREST)
                    x[j] = np.asarray(img, dtype=np.float32).reshape(self.height, self.width, self.channels)
            x *= 1.0 / 255.0  # ImageDataGenerator(rescale=1/255)
            pixels = np.rint(x * 255.0).astype(np.uint8)  # the model's input contract: uint8, it rescales itself
            return pixels, self.labels[idx]

    return TutorialLoader


# ---------------------------------------------------------------------------------------------
# measuring


def seed_everything(seed: int) -> None:
    """Same seed, same initial weights. keras.utils.set_random_seed imports TensorFlow whenever it is
    installed, to seed it too; on JAX seed only Python and NumPy, which is where Keras' initializers
    and dropout layers draw their seeds from, so TensorFlow stays out of a JAX run."""
    import keras

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
    else:
        random.seed(seed)
        np.random.seed(seed)


def make_timer() -> Any:
    import keras

    class FitTimer(keras.callbacks.Callback):
        """From the first batch's start to epoch end, after Keras synced the epoch's metrics. It
        defines no on_train_batch_end on purpose: that would make Keras wait after every step."""

        def __init__(self) -> None:
            super().__init__()
            self.began = self.ended = 0.0

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if batch == 0:
                self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.ended = time.perf_counter()

        @property
        def seconds(self) -> float:
            return self.ended - self.began

    return FitTimer()


class Run:
    """One model under one setting: build and compile, warm up, then timed fits on demand."""

    def __init__(
        self,
        build: Callable[[Any], Any],
        spec: Any,
        precision: str,
        jit: bool | str,
        source: Callable[[], Any],
        batch: int,
        warmup: int,
        seed: int,
    ) -> None:
        import keras

        self.precision, self.batch, self.source = precision, batch, source
        began = time.perf_counter()
        with import_cnnops_model().precision_policy(precision):
            seed_everything(seed)
            self.model = build(spec)
            self.model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                jit_compile=jit,
            )
            self.build_s = time.perf_counter() - began
            self.model.fit(source(), steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
        self.warmup_s = time.perf_counter() - began - self.build_s
        self.jit_compile = bool(self.model.jit_compile)
        self.n_params = int(self.model.count_params())
        self.seconds: list[float] = []
        self.losses: list[float] = []

    def timed(self, steps: int) -> float:
        timer = make_timer()
        with import_cnnops_model().precision_policy(self.precision):
            history = self.model.fit(
                self.source(), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[timer]
            )
        self.seconds.append(timer.seconds)
        self.losses.append(float(history.history["loss"][-1]))
        return steps * self.batch / timer.seconds

    def row(self, steps: int, warmup: int, **extra: Any) -> dict[str, Any]:
        rates = [steps * self.batch / s for s in self.seconds]
        median = statistics.median(rates)
        return {
            **extra,
            "precision": self.precision,
            "jit_compile": self.jit_compile,
            "batch": self.batch,
            "warmup_steps": warmup,
            "steps": steps,
            "repeats": len(rates),
            "n_params": self.n_params,
            "build_compile_s": round(self.build_s, 2),
            "warmup_fit_s": round(self.warmup_s, 2),
            "seconds": [round(s, 4) for s in self.seconds],
            "images_per_s": [round(r, 1) for r in rates],
            "images_per_s_median": round(median, 1),
            "ms_per_step_median": round(1000 * self.batch / median, 2),
            "loss_after_each_timed_fit": [round(v, 4) for v in self.losses],
        }

    def close(self) -> None:
        del self.model
        import keras

        keras.backend.clear_session()
        gc.collect()


def measure_models(
    args: argparse.Namespace,
    backend: str,
    cnnops_model: Any,
    settings: dict[str, dict[str, int]],
    precisions: list[str],
    jits: list[bool],
) -> list[dict[str, Any]]:
    rows = []
    for name in args.models:
        batch, warmup, steps, repeats = (settings[name][k] for k in ("batch", "warmup", "steps", "repeats"))
        small = name in SMALL
        side, mode = (28, "L") if small else (224, "RGB")
        spec = cnnops_model.ModelSpec(class_names=list(SHAPES), height=side, width=side, mode=mode, architecture=name)
        options = cnnops_model.ModelOptions(
            weights="none", trainable_layers=None if args.trainable == "frozen" else 10**6
        )
        pixels, labels = synthetic_images(max(4 * batch, 256), side, side, 1 if small else 3, args.seed)
        source = memory_source(backend, pixels, labels, batch, args.seed, shuffle=False)
        for precision in precisions:
            for jit in jits:
                label = f"{name:>15} {precision:>15} jit_compile={'on' if jit else 'off':<3}"
                print(f"{label} batch {batch}: building, {warmup} warm-up steps ...", flush=True)
                base = {
                    "section": "models",
                    "model": name,
                    "image": f"{side}x{side}x{1 if small else 3}",
                    "trainable": "all" if small else args.trainable,
                    "input": "tf.data from memory" if backend == "tensorflow" else "numpy generator",
                }
                run = None
                try:
                    run = Run(
                        functools.partial(cnnops_model.build_model, options=options),
                        spec,
                        precision,
                        jit,
                        source,
                        batch,
                        warmup,
                        args.seed,
                    )
                    for _ in range(repeats):
                        run.timed(steps)
                    row = run.row(steps, warmup, **base)
                    print(
                        f"{label} {row['images_per_s_median']:10.1f} images/s  {row['ms_per_step_median']:9.1f} "
                        f"ms/step  (warm-up fit {row['warmup_fit_s']:.1f} s, "
                        f"loss {row['loss_after_each_timed_fit'][-1]})",
                        flush=True,
                    )
                except Exception as err:  # noqa: BLE001 - one failed setting must not lose the others
                    row = {
                        **base,
                        "precision": precision,
                        "jit_compile": jit,
                        "batch": batch,
                        "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}",
                    }
                    print(f"{label} FAILED: {row['error']}", flush=True)
                finally:
                    if run is not None:
                        run.close()
                    row["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
                rows.append(row)
    return rows


def measure_input_paths(
    args: argparse.Namespace, backend: str, cnnops_model: Any, settings: dict[str, int]
) -> dict[str, Any]:
    """simple-cnn fp32 fed by tf.data over PNG files, from memory, and by a PIL PyDataset."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return {"skipped": "Pillow is not installed: no PNG files to write or read"}
    batch, warmup, steps, repeats = (settings[k] for k in ("batch", "warmup", "steps", "repeats"))
    n = -(-args.images // batch) * batch  # full batches only
    spec = cnnops_model.ModelSpec(class_names=list(SHAPES), height=28, width=28, mode="L", architecture="simple-cnn")
    pixels, labels = synthetic_images(n, 28, 28, 1, args.seed + 1)
    result: dict[str, Any] = {
        "model": "simple-cnn",
        "precision": "float32",
        "batch": batch,
        "images": n,
        "image": "28x28x1 PNG",
        "warmup_steps": warmup,
        "steps": steps,
    }
    with tempfile.TemporaryDirectory(prefix="cnnops-bench-train-") as tmp:
        began = time.perf_counter()
        manifest = write_png_dataset(Path(tmp), pixels, labels)
        print(f"input paths: wrote {n} PNG files in {time.perf_counter() - began:.1f} s (not timed)", flush=True)
        paths = [row["path"] for row in manifest]
        decoded = decode_files(paths, "L", (28, 28))
        if not np.array_equal(decoded, pixels):
            raise SystemExit("decoded PNG pixels differ from the generated ones")
        sources: dict[str, Callable[[], Any]] = {}
        restore: Callable[[], None] = lambda: None  # noqa: E731
        if backend == "tensorflow":
            sources["tf.data"], result["cache_fill"], counter, restore = tfdata_source(manifest, spec, batch, args.seed)
        else:
            result["tf.data"] = "skipped: TensorFlow is not the backend (tf.data needs it)"
        sources["in-memory"] = memory_source(backend, decoded, labels, batch, args.seed, shuffle=True)
        loader = tutorial_loader_class()(paths, labels, batch, "L", (28, 28), args.seed)
        sources["generator"] = lambda: loader
        runs: dict[str, Run] = {}
        try:
            for name, source in sources.items():
                print(f"input paths: {name}: building, {warmup} warm-up steps ...", flush=True)
                runs[name] = Run(cnnops_model.build_model, spec, "float32", "auto", source, batch, warmup, args.seed)
            alone: dict[str, list[float]] = {name: [] for name in runs}
            alone_steps = max(steps, n // batch)
            for repeat in range(repeats):  # interleaved: load drift hits every path alike
                for name, run in runs.items():
                    rate = run.timed(steps)
                    alone[name].append(input_only_rate(sources[name], alone_steps, batch))
                    print(
                        f"input paths: {name:>10} repeat {repeat + 1}: {rate:10.1f} images/s training, "
                        f"{alone[name][-1]:10.1f} images/s input alone",
                        flush=True,
                    )
            if "tf.data" in runs:
                fill = result["cache_fill"]
                fill["decodes_after_fill"] = counter["n"] - fill["decodes_in_first_pass"]
                if fill["decodes_after_fill"]:
                    print("WARNING: tf.data decoded files again after its cache was filled", flush=True)
            result["rows"] = [
                {
                    **run.row(steps, warmup, section="input", input=name),
                    "input_only_steps": alone_steps,
                    "input_only_images_per_s": [round(r, 1) for r in alone[name]],
                    "input_only_images_per_s_median": round(statistics.median(alone[name]), 1),
                }
                for name, run in runs.items()
            ]
        finally:
            restore()
            for run in runs.values():
                run.close()
    rate = {row["input"]: row["images_per_s_median"] for row in result["rows"]}
    result["jit_compile"] = result["rows"][0]["jit_compile"]
    if "tf.data" in rate:
        result["ratios"] = {
            "tfdata_over_in_memory": round(rate["tf.data"] / rate["in-memory"], 3),
            "tfdata_over_generator": round(rate["tf.data"] / rate["generator"], 3),
        }
        result["targets"] = {
            "tfdata_over_in_memory >= 0.90": result["ratios"]["tfdata_over_in_memory"] >= 0.90,
            "tfdata_over_generator >= 2.0": result["ratios"]["tfdata_over_generator"] >= 2.0,
        }
    result["ratios"] = {
        **result.get("ratios", {}),
        "in_memory_over_generator": round(rate["in-memory"] / rate["generator"], 3),
    }
    return result


def input_only_rate(source: Callable[[], Any], steps: int, batch: int) -> float:
    """Images/s of the input path with no model: batches pulled one after another (2 untimed first)."""
    import keras

    data = source()
    batches = (data[i] for i in itertools.count()) if isinstance(data, keras.utils.PyDataset) else iter(data)
    for _ in range(2):
        next(batches)
    began = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch / (time.perf_counter() - began)


def tfdata_source(
    rows: list[dict[str, str]], spec: Any, batch: int, seed: int
) -> tuple[Callable[[], Any], dict[str, Any], dict[str, int], Callable[[], None]]:
    """The project's make_dataset, endless, with its cache filled by one untimed full pass.

    load_checked (decode + sha256 check of one file) is wrapped with a counter for the duration, to
    show that no file is decoded again once the cache is full."""
    import pandas as pd

    import cnnops.modeling.inputs as inputs

    manifest = pd.DataFrame(rows)
    counter = {"n": 0}
    original = inputs.load_checked

    def counting(*a: Any) -> Any:
        counter["n"] += 1
        return original(*a)

    inputs.load_checked = counting  # make_dataset's loader looks the name up per call

    def restore() -> None:
        inputs.load_checked = original

    ds = inputs.make_dataset(manifest, spec, batch, shuffle=True, seed=seed)
    began = time.perf_counter()
    with inputs.input_errors_as_user_errors():
        batches = sum(1 for _ in ds)
    fill_s = time.perf_counter() - began
    fill = {
        "first_pass_s": round(fill_s, 3),
        "first_pass_images_per_s": round(len(manifest) / fill_s, 1),
        "batches": batches,
        "decodes_in_first_pass": counter["n"],
    }
    print(
        f"input paths: tf.data first pass (decode + sha256 check of {len(manifest)} files, fills the cache): "
        f"{fill_s:.2f} s, {len(manifest) / fill_s:.0f} images/s (not in the timed figures)",
        flush=True,
    )
    endless = ds.repeat()
    return (lambda: endless), fill, counter, restore


# ---------------------------------------------------------------------------------------------
# report


def markdown(results: dict[str, Any]) -> str:
    hw, ver = results["hardware"], results["versions"]
    device = ", ".join(hw.get("gpus") or []) or f"CPU only ({hw['cpu_model']}, {hw['cpus_usable']} cores)"
    backend_version = ver.get(results["backend"], "?")
    lines = [
        f"Training throughput, {results['backend']} {backend_version}, Keras {ver['keras']}, {device}; "
        f"`{results['command']}`",
        "",
    ]
    rows = results.get("models") or []
    if rows:
        lines += [
            "| model | image | batch | precision | XLA | images/s (median) | ms/step | range | vs first row |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        first: dict[str, float] = {}
        for row in rows:
            xla = "on" if row["jit_compile"] else "off"
            if "error" in row:
                lines.append(
                    f"| {row['model']} | {row['image']} | {row['batch']} | {row['precision']} | {xla} | "
                    f"failed: {row['error'][:80]} | | | |"
                )
                continue
            rate = row["images_per_s_median"]
            first.setdefault(row["model"], rate)
            spread = f"{min(row['images_per_s']):.0f}–{max(row['images_per_s']):.0f}"
            lines.append(
                f"| {row['model']} | {row['image']} | {row['batch']} | {row['precision']} | {xla} | "
                f"{rate:.1f} | {row['ms_per_step_median']:.1f} | {spread} | "
                f"{rate / first[row['model']]:.2f}× |"
            )
        lines.append("")
    section = results.get("input_path")
    if section and "rows" in section:
        names = {
            "tf.data": "tf.data `make_dataset` over PNG files (cache filled)",
            "in-memory": "same arrays from memory",
            "generator": "PyDataset, PIL per batch (tutorial style)",
        }
        lines += [
            f"Input paths, simple-cnn fp32, batch {section['batch']}, {section['images']} images of "
            f"28×28 grey, XLA {'on' if section['jit_compile'] else 'off'}:",
            "",
            "| input path | training images/s (median) | range | input alone, images/s |",
            "|---|---|---|---|",
        ]
        for row in section["rows"]:
            spread = f"{min(row['images_per_s']):.0f}–{max(row['images_per_s']):.0f}"
            lines.append(
                f"| {names[row['input']]} | {row['images_per_s_median']:.1f} | {spread} | "
                f"{row['input_only_images_per_s_median']:.0f} |"
            )
        lines.append("")
        ratios = section["ratios"]
        if "tfdata_over_in_memory" in ratios:
            fill = section["cache_fill"]
            met = section["targets"]
            lines += [
                f"- tf.data / in-memory: **{ratios['tfdata_over_in_memory']:.2f}** (target ≥ 0.90: "
                f"{'met' if met['tfdata_over_in_memory >= 0.90'] else 'NOT met'})",
                f"- tf.data / generator: **{ratios['tfdata_over_generator']:.2f}×** (target ≥ 2×: "
                f"{'met' if met['tfdata_over_generator >= 2.0'] else 'NOT met'})",
                f"- first tf.data pass (decode and hash check of every file, fills the cache; not above): "
                f"{fill['first_pass_s']:.2f} s, {fill['first_pass_images_per_s']:.0f} images/s",
            ]
        lines.append(f"- in-memory / generator: {ratios['in_memory_over_generator']:.2f}×")
    elif section:
        lines.append(f"Input paths: {section.get('skipped') or 'failed: ' + section.get('error', '?')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def per_model(values: list[str] | None, models: list[str], defaults: dict[str, int], flag: str) -> dict[str, int]:
    """`N` sets every model, `MODEL=N` one model; later values win."""
    out = dict(defaults)
    for value in values or []:
        name, _, number = value.rpartition("=")
        if name and name not in models:
            raise SystemExit(f"{flag} {value}: {name} is not among --models ({', '.join(models)})")
        try:
            count = int(number)
        except ValueError:
            raise SystemExit(f"{flag} {value}: expected N or MODEL=N") from None
        if count < 1:
            raise SystemExit(f"{flag} {value}: must be at least 1")
        for model in [name] if name else models:
            out[model] = count
    return out


def parse_args() -> argparse.Namespace:
    head, _, rest = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(
        description=" ".join(head.split()), epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: simple-cnn only unless --models names more, 2 warm-up and 5 timed "
        "steps (224 models: batch 8, 1 and 2), 1 repeat, 512 images; explicit flags win",
    )
    parser.add_argument("--models", nargs="+", choices=KNOWN_MODELS, help="default: simple-cnn mobilenet_v2 resnet50")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "mixed"), default=["fp32", "mixed"])
    parser.add_argument(
        "--mixed-policy",
        choices=("mixed_bfloat16", "mixed_float16"),
        default="mixed_bfloat16",
        help="the policy 'mixed' means (default mixed_bfloat16)",
    )
    parser.add_argument(
        "--xla",
        choices=("off", "on", "both"),
        help="model.compile(jit_compile=...): default both on TensorFlow, on with JAX "
        "(off there means eager, op-by-op JAX)",
    )
    parser.add_argument(
        "--steps",
        nargs="+",
        metavar="N|MODEL=N",
        help="timed steps per fit (default CPU: 100 for 28x28 models, 10 for 224 ones; GPU: 500 and 100)",
    )
    parser.add_argument(
        "--warmup", nargs="+", metavar="N|MODEL=N", help="untimed warm-up steps (default CPU: 10 and 2; GPU: 20 and 10)"
    )
    parser.add_argument(
        "--batch",
        nargs="+",
        metavar="N|MODEL=N",
        help="batch size (default 128 for 28x28 models; 224 models: 32 on CPU, 128 on GPU)",
    )
    parser.add_argument(
        "--repeats",
        nargs="+",
        metavar="N|MODEL=N",
        help="timed fits per setting, the median is reported (default 3; 224 models on CPU: 1)",
    )
    parser.add_argument("--images", type=int, help="PNG files for the input section (default 4096)")
    parser.add_argument("--sections", nargs="+", choices=("models", "input"), default=["models", "input"])
    parser.add_argument(
        "--trainable",
        choices=("all", "frozen"),
        default="all",
        help="224 backbones: train the whole network (default) or only the head "
        "(cnnops' default train.trainable_layers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="default bench/results/train-BACKEND-DEVICE[-quick].json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    import keras

    backend = keras.backend.backend()
    hardware, versions, accelerated = machine_info(backend)
    cnnops_model = import_cnnops_model()
    kind = "quick" if args.quick else ("gpu" if accelerated else "cpu")
    args.models = args.models or (["simple-cnn"] if args.quick else ["simple-cnn", "mobilenet_v2", "resnet50"])
    unknown = set(args.models) - set(cnnops_model.ARCHITECTURES)
    if unknown:
        raise SystemExit(f"unknown architectures: {', '.join(sorted(unknown))}")
    args.images = args.images or (512 if args.quick else 4096)
    default = {m: DEFAULTS[kind]["small" if m in SMALL else "big"] for m in [*args.models, "simple-cnn"]}
    names = list(default)
    settings_by_key = {
        key: per_model(getattr(args, key), names, {m: default[m][i] for m in names}, f"--{key}")
        for i, key in enumerate(("batch", "warmup", "steps", "repeats"))
    }
    settings = {m: {key: settings_by_key[key][m] for key in settings_by_key} for m in names}
    xla = args.xla or ("both" if backend == "tensorflow" else "on")
    jits = {"off": [False], "on": [True], "both": [False, True]}[xla]
    precisions = ["float32" if p == "fp32" else args.mixed_policy for p in args.precisions]
    device = "gpu" if accelerated else "cpu"
    out = args.out or ROOT / "bench" / "results" / f"train-{backend}-{device}{'-quick' if args.quick else ''}.json"
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    command = shlex.join(
        [*(f"{k}={v}" for k, v in env.items() if k in ("KERAS_BACKEND", "PYTHONPATH")), sys.executable, *sys.argv]
    )
    if "KERAS_BACKEND" not in env:
        command = f"KERAS_BACKEND={backend} {command}"
    print(
        f"backend {backend} {versions.get(backend)}, keras {versions['keras']}, "
        f"{', '.join(hardware['gpus']) or 'no GPU'}, CPU {hardware['cpu_model']} x{hardware['cpus_usable']}, "
        f"load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )

    results: dict[str, Any] = {
        "benchmark": "train",
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "argv": sys.argv,
        "env": env,
        "quick": args.quick,
        "backend": backend,
        "versions": versions,
        "hardware": hardware,
        "settings": {
            "per_model": {m: settings[m] for m in args.models},
            "input_section": settings["simple-cnn"],
            "precisions": precisions,
            "jit_compile": jits,
            "trainable_224": args.trainable,
            "input_images": args.images,
            "seed": args.seed,
        },
        "timed": "per setting: fresh model, compile, untimed warm-up fit of `warmup` steps, then `repeats` "
        "fits of `steps` steps, each clocked from its first batch's start to epoch end (metrics "
        "synced); images/s = steps*batch/seconds; tf.data only after a full untimed pass filled "
        "its cache",
    }
    if "models" in args.sections:
        results["models"] = measure_models(args, backend, cnnops_model, settings, precisions, jits)
    if "input" in args.sections:
        try:
            results["input_path"] = measure_input_paths(args, backend, cnnops_model, settings["simple-cnn"])
        except Exception as err:  # noqa: BLE001 - keep the models section's figures
            results["input_path"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print(f"input paths FAILED: {results['input_path']['error']}", flush=True)
    hardware["loadavg_at_end"] = os.getloadavg()
    results["tensorflow_imported"] = "tensorflow" in sys.modules
    results["finished_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
