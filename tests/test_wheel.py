"""attnviz works installed from its wheel: one import name, every module and the shipped model_info inside it.

The wheel is built from this checkout (``pip wheel --no-deps``) and installed into a fresh virtual environment.
The environment gets its dependencies (numpy, h5py, torch, ...) from the test's own environment through a
``.pth`` path entry, not the test environment's editable install of attnviz, so what runs is only the wheel.
Everything then runs from an empty temporary folder, far from this checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Source folder -> the package it installs as (pyproject's [tool.setuptools.package-dir]).
INSTALLED_AS = {"pipeline": "attnviz/pipeline", "dashboard": "attnviz/dashboard", "model_info": "attnviz/model_info",
               "attnviz": "attnviz"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy without build outputs: setuptools reuses build/lib, which would carry stale modules.
    source = tmp_path_factory.mktemp("source") / "attnviz"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "stores",
                                                                "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("attnviz-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed; returns its ``bin`` folder."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.run([str(bin_dir / "python"), "-c", ask], check=True, capture_output=True,
                               text=True).stdout.strip())
    (site / "attnviz_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return bin_dir


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTNVIZ_MODEL_INFO")}
    return {**env, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def test_the_wheel_installs_one_import_name_with_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
        assert top_level == {"attnviz"}
        for listing in (n for n in names if n.endswith(".dist-info/top_level.txt")):
            assert archive.read(listing).decode().split() == ["attnviz"]
    for folder, package in INSTALLED_AS.items():
        for source in (REPO / folder).rglob("*"):
            if source.suffix in (".py", ".yaml", ".css", ".js", ".json") and "__pycache__" not in source.parts:
                wanted = f"{package}/{source.relative_to(REPO / folder).as_posix()}"
                assert wanted in names, f"{source.relative_to(REPO)} is not in the wheel (list its package in " \
                                        "pyproject's [tool.setuptools] packages)"


def test_the_installed_wheel_lists_models_and_precomputes_from_any_folder(installed: Path, tmp_path: Path) -> None:
    env = _clean_env()
    ask = "import attnviz.pipeline; print(attnviz.pipeline.__file__)"
    where = subprocess.run([str(installed / "python"), "-c", ask], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True).stdout
    assert str(installed.parent) in where and str(REPO) not in where

    listed = subprocess.run([str(installed / "attnviz"), "models"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name in ("minilm", "gpt2-random", "bert-random", "seq2seq-random"):
        assert name in listed.stdout

    (tmp_path / "in.txt").write_text("The wheel works from any folder.\nA second sentence.\n")
    done = subprocess.run([str(installed / "attnviz"), "precompute", "--model", "bert-random", "--input", "in.txt",
                           "--store", "s.h5", "--set", "layers=1", "--set", "heads=2", "--set", "hidden=32",
                           "--set", "intermediate_size=64"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    checked = subprocess.run([str(installed / "attnviz"), "verify", "--store", "s.h5"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and "every example listed once" in checked.stdout, checked.stdout + checked.stderr
    shown = subprocess.run([str(installed / "attnviz"), "inspect", "--store", "s.h5"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "bert-random--in" in shown.stdout, shown.stdout + shown.stderr


def test_a_users_model_info_folder_adds_models_to_the_shipped_ones(installed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "my_models"
    folder.mkdir()
    (folder / "tiny-bert.yaml").write_text((REPO / "model_info" / "bert-random.yaml").read_text()
                                           .replace("name: bert-random", "name: tiny-bert"))
    env = {**_clean_env(), "ATTNVIZ_MODEL_INFO": str(folder)}
    listed = subprocess.run([str(installed / "attnviz"), "models"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-bert" in listed.stdout and "minilm" in listed.stdout


def test_the_installed_wheel_serves_the_vendored_plotly_bundle(installed: Path, tmp_path: Path) -> None:
    """The page's Plotly (dashboard/vendor/, package data) is in the wheel and served by its route."""
    check = (
        "from attnviz.dashboard import plotly_bundle\n"
        "from attnviz.dashboard.app import create_app\n"
        "assert 'site-packages' in str(plotly_bundle.BUNDLE_FILE), plotly_bundle.BUNDLE_FILE\n"
        "r = create_app('absent.h5').server.test_client().get(plotly_bundle.route())\n"  # the store opens lazily
        "body = r.get_data()\n"
        "assert r.status_code == 200 and body.startswith(plotly_bundle.COMPILE_HINT), r.status_code\n"
        "assert body[len(plotly_bundle.COMPILE_HINT):] == plotly_bundle.BUNDLE_FILE.read_bytes()\n"
        "print(len(body))\n")
    done = subprocess.run([str(installed / "python"), "-c", check], cwd=tmp_path, env=_clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 1_000_000
