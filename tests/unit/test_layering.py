"""The layering rules of the design: the library never imports kfp or bentoml; components import
only the standard library and kfp at module top level."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_library_modules_do_not_import_kfp_or_bentoml():
    modules = sorted(
        f"cnnops.{p.stem}" for p in (ROOT / "src" / "cnnops").glob("*.py") if p.stem not in {"__init__", "cli"}
    )
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('kfp', 'bentoml'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cli_imports_kfp_only_inside_pipeline_commands():
    code = "import sys, cnnops.cli; print(any(k.startswith('kfp') for k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_components_import_only_stdlib_and_kfp_at_top_level():
    allowed = set(sys.stdlib_module_names) | {"kfp", "components"}
    for path in sorted((ROOT / "components").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed} at module level"
