"""User-facing errors: one line that names the problem and the fix, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Set by the local pipeline runner: a failing task appends its one-line reason here for the CLI.
ERROR_FILE_ENV = "CNNOPS_ERROR_FILE"


class CnnopsError(Exception):
    """A mistake in the user's input or environment that the user can fix.

    The CLI and the pipeline components print it as one line and exit non-zero;
    anything else is a bug and keeps its traceback.
    """


class SystemFault(CnnopsError):
    """A part of the system failed, not the user's input: said in one line all the same, and a
    command that meets one exits 1, where a user's mistake exits 2."""


class StoreFault(SystemFault):
    """The MLflow store failed (unreachable, locked, a database error)."""


class ServiceFault(SystemFault):
    """A cnnops service did not answer (unreachable, timed out, a 5xx), or answered with
    something that is not what its contract says."""


class ImageDecodeError(CnnopsError):
    """Bytes that are not an image cnnops can use; the message is the quarantine reason."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a CnnopsError into a one-line message and exit status 2, so a user's mistake never prints
    a traceback, whether the step runs from the CLI or inside a pipeline task. Bugs keep theirs.
    """
    try:
        yield
    except CnnopsError as err:
        print(f"cnnops: error: {err}", file=sys.stderr, flush=True)
        report = os.environ.get(ERROR_FILE_ENV)
        if report:
            with open(report, "a", encoding="utf-8") as handle:
                handle.write(f"{err}\n")
        raise SystemExit(2) from None


def first_problem(err: ValidationError, whole: str = "its fields") -> str:
    """`where: what` of a validation error's first problem, the one line every refusal of a record,
    an answer or a setting shows (`whole` names the place when the problem is not in one field)."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or whole
    return f"{where}: {first['msg']}"
