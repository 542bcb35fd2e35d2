"""The commands the tests run as a user does."""

from __future__ import annotations

import sys
from pathlib import Path

# The venv's own `cnnops` command, for tests that run it as a user does.
CNNOPS = Path(sys.executable).parent / "cnnops"
