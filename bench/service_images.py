"""The two service images of one registered version, side by side: built on the ONNX serving image
(`make serve-image`) and on the project image (`make image`), their sizes and the seconds from
`docker run` to a 200 from /readyz, each started the way the Deployment runs it.

    .venv/bin/python bench/service_images.py [--model-name cnnops-animals] [--version champion]
                                             [--starts 5] [--out bench/results/service_images.json]

Needs a Docker daemon (`make docker-start`) and both runtime images. Starts alternate between the
two images, so neither gets a warmer page cache; each start is timed from just before `docker run`
to the first 200 of /readyz, polled every 50 ms from the host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
ROOT = Path(__file__).resolve().parents[1]
READY_S = 120


def docker(*args: str, timeout: float = 120) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=True).stdout


def time_to_ready(image: str, *options: str) -> float:
    """Seconds from `docker run` to a 200 from /readyz; the container is removed after."""
    from cnnops.core.processes import free_port
    from cnnops.inference.service_client import is_ready

    port = free_port()
    began = time.monotonic()
    name = docker(
        "run",
        "--detach",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,exec",
        "--publish",
        f"127.0.0.1:{port}:3000",
        *options,
        image,
    ).strip()
    try:
        while time.monotonic() - began < READY_S:
            if is_ready(f"http://127.0.0.1:{port}"):
                return time.monotonic() - began
            time.sleep(0.05)
        raise SystemExit(f"{image} was not ready in {READY_S} s: {docker('logs', name)[-2000:]}")
    finally:
        docker("rm", "--force", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model-name", default="cnnops-animals")
    parser.add_argument("--version", default="champion")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "service_images.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cnnops.components import BASE_IMAGE
    from cnnops.core.paths import keep_tool_state_inside
    from cnnops.serving.bento import SERVE_IMAGE, containerize, package_version, runtime_image

    keep_tool_state_inside()
    built = package_version(args.model_name, args.version)
    images = {}
    for runtime in ("onnx", "keras"):
        base = runtime_image(built, runtime, BASE_IMAGE, SERVE_IMAGE)
        images[runtime] = {"image": containerize(built, base, f"cnnops-bench-{runtime}")[0], "base": base}
    # The Keras image also holds ONNX Runtime; it is asked for Keras, as a model without an export runs.
    options = {"onnx": (), "keras": ("--env", 'CNNOPS_SERVE_CONFIG={"runtime": "keras"}')}
    starts: dict[str, list[float]] = {runtime: [] for runtime in images}
    for _ in range(args.starts):
        for runtime, built_image in images.items():
            starts[runtime].append(time_to_ready(built_image["image"], *options[runtime]))
    results = {}
    for runtime, built_image in images.items():
        size = int(docker("image", "inspect", "--format", "{{.Size}}", built_image["image"]))
        results[runtime] = {
            **built_image,
            "size_mb": size / 1e6,
            "ready_s": starts[runtime],
            "median_ready_s": statistics.median(starts[runtime]),
        }
        print(
            f"{runtime:>6}: {size / 1e6:7.0f} MB on {built_image['base']}; docker run to /readyz "
            f"median {results[runtime]['median_ready_s']:.2f} s ({', '.join(f'{s:.2f}' for s in starts[runtime])})"
        )
    record = {"bento": built.bento, "model": args.model_name, "version": built.version, "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**record, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
