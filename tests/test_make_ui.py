"""`make ui` starts a real MLflow server on loopback; the test stops it by its process group."""

import os
import subprocess
import time
import urllib.request
from pathlib import Path

from conftest import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[1]


def test_make_ui_serves_the_store_on_loopback(tmp_path):
    port = free_port()
    env = {**os.environ, "CNNOPS_HOME": str(tmp_path / "state")}
    server = subprocess.Popen(["make", "--no-print-directory", "ui", f"MLFLOW_PORT={port}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline, body = time.monotonic() + 90, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert body == "OK", server.stderr.read().decode()[-2000:] if server.poll() is not None else body
        assert (tmp_path / "state" / "mlflow" / "mlflow.db").is_file()
    finally:
        stop_process_group(server)
