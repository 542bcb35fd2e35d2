"""Submit the compiled pipeline to a Kubeflow Pipelines API server, once or on a schedule.

The package sent is the same IR `cnnops compile` writes, platform spec included. No Kubeflow API
server runs on the project's machines: the tests answer kfp.Client's HTTP calls from a loopback
server, so everything up to the cluster itself is tried, and the cluster is not.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnops.core.errors import CnnopsError
from cnnops.pipelines.compile import compile_pipeline
from cnnops.pipelines.pipeline import PIPELINE_NAME
from cnnops.pipelines.platform import Platform


@dataclass(frozen=True)
class Submission:
    """What the API server made: a run, or a recurring run when a schedule was given."""

    kind: str  # "run" or "recurring run"
    id: str
    experiment: str


def submit_pipeline(
    host: str,
    arguments: dict[str, Any],
    experiment: str = "cnnops",
    platform: Platform = Platform(),  # noqa: B008 - frozen
    image: str | None = None,
    schedule: str | None = None,
) -> Submission:
    """Compile the pipeline for `platform` and create a run of it on the server at `host` with
    `arguments`, or a recurring run on the cron `schedule`; a server that does not answer, or
    refuses, is one line."""
    import kfp

    check_answers(host)
    with tempfile.TemporaryDirectory(prefix="cnnops-submit-") as scratch:
        package = str(compile_pipeline(Path(scratch) / f"{PIPELINE_NAME}.yaml", platform, image))
        # kfp.Client prints links and logs its retries; the one line cnnops prints says the outcome.
        with contextlib.redirect_stdout(io.StringIO()), quiet_kfp_client(), client_faults(host):
            client = kfp.Client(host=host)
            if schedule is None:
                result = client.create_run_from_pipeline_package(
                    package, arguments=arguments, experiment_name=experiment
                )
                return Submission("run", result.run_id, experiment)
            experiment_id = client.create_experiment(experiment).experiment_id
            recurring = client.create_recurring_run(
                experiment_id,
                job_name=f"{PIPELINE_NAME} {schedule}",
                cron_expression=schedule,
                params=arguments,
                pipeline_package_path=package,
            )
            return Submission("recurring run", recurring.recurring_run_id, experiment)


def check_answers(host: str, timeout: float = 30.0) -> None:
    """One bounded probe of the API's health endpoint: kfp.Client waits on a silent host forever."""
    try:
        with urllib.request.urlopen(f"{host.rstrip('/')}/apis/v2beta1/healthz", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered; kfp.Client's own calls say what it thinks
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise CnnopsError(
            f"no Kubeflow Pipelines API answers at {host} ({reason}); check --host and that the API server is reachable"
        ) from None


@contextlib.contextmanager
def quiet_kfp_client() -> Any:
    """No log lines of kfp's retries, and not its notice that it needs KFP 2.0.0-beta.2 or later."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This client only works with Kubeflow Pipeline")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def client_faults(host: str) -> Any:
    """The API server's errors as one line: unreachable, or the status and reason it answered."""
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as err:
        raise CnnopsError(
            f"the Kubeflow Pipelines API at {host} refused the submission: HTTP {err.status} {err.reason}"
        ) from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise CnnopsError(
            f"no Kubeflow Pipelines API answers at {host} ({unreachable_reason(err)}); "
            "check --host and that the API server is reachable"
        ) from None


def unreachable_reason(err: Exception) -> str:
    """The cause urllib3 wraps after its retries ("Connection refused"), without its pool's address."""
    cause = getattr(err, "reason", None) or err
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return text.split("): ", 1)[-1][:200]
