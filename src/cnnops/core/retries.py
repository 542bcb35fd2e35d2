"""How long an MLflow client keeps retrying a tracking server that does not answer.

MLflow's own defaults retry seven times with a doubling backoff: about four minutes before a task
learns that its server is gone. cnnops retries five times from 1 s (about half a minute): a
restarting server or database is ridden out, a lasting outage is one clear line well within a
minute. A value the user has set wins.
"""

from __future__ import annotations

import os

STORE_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def bound_store_retries() -> dict[str, str]:
    """Set cnnops's retry policy in the environment (tasks inherit it); returns the policy in force."""
    for name, value in STORE_RETRIES.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in STORE_RETRIES}
