"""Who may import whom: the layering the design depends on, checked on the real modules.

* The store, the metrics and the corpus statistics import neither torch nor dash (a machine without the model
  extras reads, verifies and aggregates stores; the server imports them).
* The dashboard imports no model code: nothing that loads, runs or taps a model, nor the precompute.
* Nothing imports upward into the CLI, and the pipeline never imports the dashboard (only the CLI, the top of
  both, does: ``attnviz serve``).
* Every import names the one installed package, ``attnviz``: never a bare ``pipeline`` or ``dashboard``.

Module lists are discovered from the source folders, so a new module is covered without editing this file.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as.
PACKAGES = {"pipeline": "attnviz.pipeline", "dashboard": "attnviz.dashboard"}
#: Importing these brings a deep-learning or web framework along.
HEAVY = ("torch", "transformers", "dash", "flask", "plotly")
#: Model code: loading, running or tapping a model, and the precompute that drives it.
MODEL_CODE = ("attnviz.pipeline.models.loading", "attnviz.pipeline.models.taps", "attnviz.pipeline.models.extract",
              "attnviz.pipeline.precompute.local", "attnviz.pipeline.precompute.distributed",
              "attnviz.pipeline.playground.engine", "torch", "transformers")


def _modules(folder: str) -> list[str]:
    """Every module under a source folder, as the installed dotted name."""
    root = REPO / folder
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join((PACKAGES[folder], *parts)))
    return names


def _imported_after(modules: list[str]) -> set[str]:
    """The names in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _numpy_only_modules() -> list[str]:
    wanted = [m for m in _modules("pipeline") if m.startswith("attnviz.pipeline.store")]
    extra = ["attnviz.pipeline.metrics", "attnviz.pipeline.records", "attnviz.pipeline.token_classes",
             "attnviz.pipeline.scan"]
    statistics = [m for m in _modules("pipeline") if m.startswith("attnviz.pipeline.statistics")]
    return [*wanted, *extra, *statistics]


def test_store_metrics_and_statistics_import_neither_torch_nor_dash() -> None:
    modules = _numpy_only_modules()
    assert {"attnviz.pipeline.store.reader", "attnviz.pipeline.metrics",
            "attnviz.pipeline.statistics.significance"} <= set(modules)
    loaded = _imported_after(modules)
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"{heavy[:5]} imported by the store, metrics or statistics modules"


def test_the_dashboard_imports_no_model_code() -> None:
    modules = _modules("dashboard")
    assert "attnviz.dashboard.app" in modules
    loaded = _imported_after(modules)
    found = sorted(m for m in loaded if m in MODEL_CODE or m.split(".")[0] in ("torch", "transformers"))
    assert not found, f"the dashboard imports model code: {found[:5]}"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, including those inside functions; relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return out


def _source_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((REPO / folder).rglob("*.py"))]


def test_nothing_imports_the_cli_and_the_pipeline_never_imports_the_dashboard() -> None:
    upward = []
    for path in _source_files("pipeline", "dashboard"):
        rel = path.relative_to(REPO).as_posix()
        for line, name in _imports(path):
            if name.startswith("attnviz.pipeline.cli") and rel != "pipeline/cli.py":
                upward.append(f"{rel}:{line} imports {name}")
            # The CLI is the top of both: ``attnviz serve`` starts the dashboard.
            if rel.startswith("pipeline/") and rel != "pipeline/cli.py" and name.startswith("attnviz.dashboard"):
                upward.append(f"{rel}:{line} imports {name}")
    assert not upward, upward


@pytest.mark.parametrize("folder", ["pipeline", "dashboard", "tests", "bench", "data", "deploy"])
def test_every_import_names_the_attnviz_package(folder: str) -> None:
    bare = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in _source_files(folder)
            for line, name in _imports(p) if name.split(".")[0] in PACKAGES]
    assert not bare, bare
