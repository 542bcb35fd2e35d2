"""The library's shape, beyond what `make lint`'s import-linter contracts hold statically: the stage
packages import without loading kfp or BentoML, the CLI loads kfp only inside pipeline commands,
components import only the standard library and kfp at module top level, at most 12 modules stand
directly in src/cnnops, and the built wheel installs one top-level name."""

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "src" / "cnnops"
# The entry-point layers, linked into the package from the repository's top.
ENTRY_POINTS = {"pipelines", "components", "serving"}


def stage_modules() -> list[str]:
    """Every module of the stage packages (not the CLI, not the linked entry points)."""
    found = []
    for package in sorted(p for p in LIBRARY.iterdir() if p.is_dir() and not p.is_symlink()):
        if not (package / "__init__.py").is_file():
            continue
        for path in sorted(package.rglob("*.py")):
            parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
            found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def test_stage_packages_import_without_kfp_or_bentoml():
    modules = stage_modules()
    assert len(modules) > 60
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
    allowed = set(sys.stdlib_module_names) | {"kfp", "cnnops.components"}
    paths = sorted((ROOT / "components").glob("*.py"))
    assert len(paths) > 10
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                roots = {module if module == "cnnops.components" else module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed} at module level"


def test_the_library_is_stage_packages_with_few_modules_at_its_top():
    top = sorted(p.name for p in LIBRARY.glob("*.py"))
    assert len(top) <= 12, top
    linked = {p.name for p in LIBRARY.iterdir() if p.is_symlink()}
    assert linked == ENTRY_POINTS
    for name in ENTRY_POINTS:
        assert (LIBRARY / name).resolve() == ROOT / name


def test_the_wheel_installs_one_top_level_name(tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is in the locked dev environment"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)], check=True, timeout=300, capture_output=True
    )
    (wheel,) = tmp_path.glob("cnnops-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"cnnops", next(t for t in tops if t.endswith(".dist-info"))}, tops
    # The entry points travel inside the one name, with the service's page.
    for member in (
        "cnnops/pipelines/pipeline.py",
        "cnnops/components/train.py",
        "cnnops/serving/service.py",
        "cnnops/serving/static/index.html",
        "cnnops/contracts/records.py",
    ):
        assert member in names, member


def test_a_bento_carries_every_package_the_service_imports_and_no_training_code():
    import grimp

    from cnnops.serving.bento import SERVICE_FILES, SERVICE_PACKAGES

    graph = grimp.build_graph("cnnops")
    imported = graph.find_upstream_modules("cnnops.serving.service")
    carried = {f"cnnops.{package}" for package in SERVICE_PACKAGES}
    service = {f"cnnops.serving.{Path(name).stem}" for name in SERVICE_FILES if name.endswith(".py")}
    outside = sorted(
        m
        for m in imported
        if m != "cnnops"
        and m not in service
        and m.rpartition(".")[0] not in carried
        and m not in carried
        and not any(m.startswith(f"{c}.") for c in carried)
    )
    assert outside == []
    assert not any(m.startswith(("cnnops.training", "cnnops.evaluation", "cnnops.promotion")) for m in imported)
