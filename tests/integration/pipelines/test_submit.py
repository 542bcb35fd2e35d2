"""`cnnops submit` up to the HTTP calls: a loopback server stands in for the Kubeflow Pipelines API
(none can be installed here), records what kfp.Client sends and answers as the v2beta1 API does.
The cluster itself is not tried."""

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml
from support.commands import CNNOPS

from cnnops.core.errors import CnnopsError
from cnnops.core.processes import free_port
from cnnops.pipelines.pipeline import pipeline_arguments
from cnnops.pipelines.platform import Platform
from cnnops.pipelines.submit import submit_pipeline
from cnnops.settings.config import build_config, to_pipeline_parameter
from cnnops.settings.parameters import PipelineParameters


class FakeApi(BaseHTTPRequestHandler):
    """The few v2beta1 endpoints kfp.Client calls to create a run or a recurring run."""

    requests: list[tuple[str, str, Any]]
    refuse: bool

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.record(None)
        if self.path == "/apis/v2beta1/healthz":
            self.answer(200, {"multi_user": False})
        elif self.path.startswith("/apis/v2beta1/experiments"):
            self.answer(200, {"experiments": [], "total_size": 0})  # no such experiment yet
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.record(body)
        if self.refuse:
            self.answer(403, {"error": "forbidden", "code": 7})
        elif self.path == "/apis/v2beta1/experiments":
            self.answer(200, {"experiment_id": "exp-1", "display_name": body["display_name"]})
        elif self.path == "/apis/v2beta1/runs":
            self.answer(200, {"run_id": "run-1", "display_name": body["display_name"], "experiment_id": "exp-1"})
        elif self.path == "/apis/v2beta1/recurringruns":
            self.answer(200, {"recurring_run_id": "rec-1", "display_name": body["display_name"]})
        else:
            self.answer(404, {"error": "not found"})

    def record(self, body: Any) -> None:
        self.requests.append((self.command, self.path.split("?")[0], body))

    def answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[FakeApi]]]:
    handler = type("Handler", (FakeApi,), {"requests": [], "refuse": False})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def sent_run(requests: list[tuple[str, str, Any]], path: str) -> dict[str, Any]:
    (body,) = [body for method, where, body in requests if method == "POST" and where == path]
    return body


def test_a_run_carries_the_compiled_pipeline_and_its_typed_parameters(api, state_home):
    host, handler = api
    overlay = to_pipeline_parameter(build_config(overrides={"train.augmentation": "light"}))
    typed = PipelineParameters(data_source="/data/flowers", epochs=5, architecture="mobilenet_v2")
    made = submit_pipeline(host, pipeline_arguments(overlay, typed, fresh=True), "retrain", Platform(gpu=True))
    assert (made.kind, made.id, made.experiment) == ("run", "run-1", "retrain")
    # kfp.Client looked for the experiment, made it, then created the run in it.
    assert [(method, path) for method, path, _ in handler.requests] == [
        ("GET", "/apis/v2beta1/healthz"),  # cnnops's bounded probe, then kfp.Client's
        ("GET", "/apis/v2beta1/healthz"),
        ("GET", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/experiments"),
        ("POST", "/apis/v2beta1/runs"),
    ]
    body = sent_run(handler.requests, "/apis/v2beta1/runs")
    assert body["experiment_id"] == "exp-1"
    parameters = body["runtime_config"]["parameters"]
    assert parameters["data_source"] == "/data/flowers" and parameters["epochs"] == 5
    assert parameters["architecture"] == "mobilenet_v2" and parameters["fresh"] is True
    assert parameters["learning_rate"] == 0.0 and parameters["model_name"] == ""  # unset: the overlay's
    assert parameters["config"]["train"]["augmentation"] == "light"
    # The pipeline went inline, with its platform spec: the GPU toleration on train.
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "cnnops-train"
    train = body["pipeline_spec"]["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"][
        "exec-train"
    ]
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_a_schedule_makes_a_recurring_run_through_the_cli(api, state_home, tmp_path):
    host, handler = api
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"gate": {"margin": 0.02}}))
    done = subprocess.run(
        [str(CNNOPS), "submit", "--host", host, "--schedule", "0 0 3 * * *", "--config", str(overlay)]
        + ["--data", "/data/flowers", "--model-name", "flowers", "--gate-metric", "macro_f1"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"cnnops: submitted recurring run rec-1 to {host} (experiment cnnops)"
    body = sent_run(handler.requests, "/apis/v2beta1/recurringruns")
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert body["experiment_id"] == "exp-1" and body["mode"] == "ENABLE"
    parameters = body["runtime_config"]["parameters"]
    assert (parameters["model_name"], parameters["gate_metric"]) == ("flowers", "macro_f1")
    assert parameters["config"]["gate"]["margin"] == 0.02


@pytest.mark.slow  # compiles twice, and waits out a server that is not there
def test_a_refusal_or_no_server_is_one_line(api, state_home):
    host, handler = api
    handler.refuse = True
    with pytest.raises(CnnopsError, match=r"^the Kubeflow Pipelines API at .* refused the submission: HTTP 403"):
        submit_pipeline(host, pipeline_arguments({}, PipelineParameters()))
    closed = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [str(CNNOPS), "submit", "--host", closed],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"cnnops: error: no Kubeflow Pipelines API answers at {closed}")
    # A bad setting stops before any request.
    bad = subprocess.run(
        [str(CNNOPS), "submit", "--host", host, "--architecture", "alexnet"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNNOPS_HOME": str(state_home)},
    )
    assert bad.returncode == 2 and "invalid config: train.architecture" in bad.stderr
    assert [method for method, _, _ in handler.requests].count("POST") == 1  # only the refused one above


@pytest.mark.slow  # ingests, then compiles and submits
def test_a_retrain_that_must_train_submits_the_run_and_says_so(api, state_home, tmp_path):
    """The decision is made here on the local copy of the data; the run goes to the cluster with
    the data as its tasks see it."""
    from support.images import write_images

    host, handler = api
    source = write_images(tmp_path / "images", per_class=10)
    output = tmp_path / "output.txt"
    done = subprocess.run(
        [str(CNNOPS), "retrain", "--data", str(source), "--model-name", "flowers", "--submit", host]
        + ["--cluster-data", "/data/flowers", "--experiment", "retrain"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CNNOPS_HOME": str(state_home), "GITHUB_OUTPUT": str(output)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"submitted run run-1 to {host} (experiment retrain): flowers has no champion yet" in done.stdout
    parameters = sent_run(handler.requests, "/apis/v2beta1/runs")["runtime_config"]["parameters"]
    assert (parameters["data_source"], parameters["model_name"]) == ("/data/flowers", "flowers")
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert (lines["decision"], lines["reason"], lines["trained"]) == ("submitted", "no-champion", "false")
