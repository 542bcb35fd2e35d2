"""Infra-validation: before a candidate becomes champion, start its Bento in a real server and
require that it serves as it was evaluated.


The server (`bentoml serve` on the Bento's folder, on a free loopback port, in a process group of
its own) must be ready in time, answer every canary test image 200 with the evaluation's top-1
label and probabilities (to the configured tolerance), and refuse a garbage upload with a 4xx. It
is stopped by its PID whatever happens. The outcome is a typed record (`InfraValidation`);
`cnnops.promotion.registration.require_infra_validation` is the one place that turns a failed or
missing validation into a challenger. Unpacking a Bento archive is serving's (`cnnops.serving.infra`).
"""

from __future__ import annotations

import mimetypes
import os
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from cnnops.contracts.infra import Canary, CanaryCheck, CanarySet, InfraValidation, read_canaries, read_infra_validation
from cnnops.contracts.served import PACKED_MODEL_FOLDER, Classification, read_served_model
from cnnops.core.errors import CnnopsError
from cnnops.core.processes import LOOPBACK, free_port, running_process
from cnnops.inference.runtime import choose_runtime
from cnnops.inference.service_client import Answer, fetch_info, is_ready, post_image
from cnnops.settings.config import ExportConfig, InfraValidationConfig, ServeConfig

SERVER_LOG = "server.log"
ARTIFACT_PATH = "infra_validation"
LOG_TAIL_LINES = 40
GARBAGE = b"cnnops infra-validation: these bytes are not an image"


def infra_validate(
    bento_dir: Path,
    bento: str,
    evaluation_dir: Path,
    settings: InfraValidationConfig,
    serve: ServeConfig,
    log: Path,
    export: ExportConfig,
) -> InfraValidation:
    """Serve the Bento in `bento_dir` and check it against the evaluation's canaries; the server's
    output goes to `log`. Never raises for what the server does: that is the outcome.

    The server runs the runtime `serve.runtime` picks, as it will be deployed. Served by ONNX
    Runtime, a canary may differ from the evaluation's Keras answer by the export's parity
    tolerance; a Bento `serve.runtime` cannot serve fails before any server starts."""
    canaries = read_canaries(evaluation_dir)
    try:
        planned = choose_runtime(serve.runtime, read_served_model(bento_dir / PACKED_MODEL_FOLDER))
    except CnnopsError as err:
        return not_served(canaries.run_id, bento, str(err))
    if planned.name == "onnx":
        settings = settings.model_copy(update={"tolerance": max(settings.tolerance, export.max_abs_diff)})
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    # The canaries are not served traffic: their drift window goes to scratch, removed after, and
    # never to the one a `cnnops serve` of this version reads back. The model is served as it will
    # be, its embedding beside its probabilities.
    with tempfile.TemporaryDirectory(prefix="cnnops-infra-") as scratch:
        env = {
            **os.environ,
            "CNNOPS_SERVE_CONFIG": serve.model_dump_json(),
            "CNNOPS_WINDOW_FILE": str(Path(scratch) / "drift-window.npz"),
        }
        env.pop("CNNOPS_MODEL_DIR", None)  # serve the model packed in the Bento, nothing else
        log.unlink(missing_ok=True)
        command = [sys.executable, "-m", "bentoml", "serve", str(bento_dir), "--host", LOOPBACK, "--port", str(port)]
        with running_process(command, log, lambda: is_ready(url), settings.ready_timeout_s, env) as started:
            problem, ready = started.problem, started.ready_seconds
            info = None if problem else fetch_info(url, settings.request_timeout_s)
            checks = [] if problem else [check_canary(url, c, canaries, settings) for c in canaries.images]
            garbage = (
                None
                if problem
                else post_image(url, GARBAGE, "garbage.png", "image/png", None, settings.request_timeout_s)
            )
    reason = problem or judge(checks, garbage, settings)
    return InfraValidation(
        run_id=canaries.run_id,
        bento=bento,
        passed=reason is None,
        reason=reason or f"{len(checks)} canaries served as evaluated; a garbage upload got {garbage_status(garbage)}",
        ready_seconds=ready,
        canaries=checks,
        garbage_status=garbage_status(garbage),
        log_tail=tail(log, LOG_TAIL_LINES),
        runtime=None if info is None else info.runtime,
    )


def not_served(run_id: str, bento: str, reason: str) -> InfraValidation:
    """The outcome for a Bento that could not be served as configured: failed, for `reason`."""
    return InfraValidation(
        run_id=run_id,
        bento=bento,
        passed=False,
        reason=reason,
        ready_seconds=None,
        canaries=[],
        garbage_status=None,
        log_tail=[],
    )


def check_canary(url: str, canary: Canary, canaries: CanarySet, settings: InfraValidationConfig) -> CanaryCheck:
    """Upload one canary for every class's probability, and compare with the evaluation's."""
    expected = canaries.class_names[max(range(len(canary.probabilities)), key=canary.probabilities.__getitem__)]
    try:
        data = Path(canary.path).read_bytes()
    except OSError as err:
        raise CnnopsError(f"canary image {canary.path} cannot be read ({err.strerror}); is the data mounted?") from None
    kind = mimetypes.guess_type(canary.path)[0] or "image/png"  # the service takes image/* uploads
    answer = post_image(url, data, Path(canary.path).name, kind, len(canaries.class_names), settings.request_timeout_s)
    served, difference = read_answer(answer, canary, canaries.class_names)
    return CanaryCheck(
        path=canary.path,
        label=canary.label,
        expected=expected,
        status=answer.status,
        served=served,
        max_difference=difference,
    )


def read_answer(answer: Answer, canary: Canary, class_names: list[str]) -> tuple[str | None, float | None]:
    """The served top-1 label and the largest probability difference from the evaluation; None
    for what a non-200 or unreadable answer does not say. A class the evaluation did not have,
    or one missing, counts as a difference of 1."""
    if answer.status != 200:
        return None, None
    try:
        predictions = Classification.model_validate_json(answer.body).predictions
    except ValidationError:
        return None, None
    served = {p.label: p.probability for p in predictions}
    top = predictions[0].label
    if set(served) != set(class_names):
        return top, 1.0
    return top, max(abs(served[name] - p) for name, p in zip(class_names, canary.probabilities, strict=True))


def judge(checks: list[CanaryCheck], garbage: Answer | None, settings: InfraValidationConfig) -> str | None:
    """Why the server fails, or None: the first canary it got wrong, or a garbage upload it took."""
    for check in checks:
        where = Path(check.path).name
        if check.status != 200:
            return f"canary {where} was answered {check.status}, not 200"
        if check.served is None or check.max_difference is None:
            return f"canary {where} was answered 200 without readable predictions"
        if check.served != check.expected:
            return f"canary {where} was served as {check.served}, the evaluation said {check.expected}"
        if check.max_difference > settings.tolerance:
            return (
                f"canary {where}'s served probabilities differ from the evaluation's by {check.max_difference:.3g}, "
                f"over the tolerance of {settings.tolerance:g}"
            )
    if garbage is not None and not 400 <= garbage.status < 500:
        return f"a garbage upload was answered {garbage.status}, not a 4xx"
    return None


def garbage_status(answer: Answer | None) -> int | None:
    return None if answer is None else answer.status


def tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log, as text."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def log_infra_validation(folder: Path) -> None:
    """Keep the outcome and the server's log in the candidate's MLflow run."""
    import mlflow

    from cnnops.tracking.stores import use_tracking_store

    validation = read_infra_validation(folder)
    use_tracking_store()
    with mlflow.start_run(run_id=validation.run_id):
        mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
        mlflow.set_tag("cnnops.infra_validation", "passed" if validation.passed else "failed")
