"""A machine without the model extras can inspect, verify and serve a store (issue 12, item 7).

Each check runs in a fresh interpreter in which importing ``torch`` or ``transformers`` raises ImportError,
as on a machine where they are not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from store_helpers import write_shard
from synthetic import synthetic_examples, synthetic_meta

from attnviz.pipeline.store import StoreWriter

REPO = Path(__file__).resolve().parents[1]
BLOCK = textwrap.dedent("""
    import importlib.abc, sys

    class _NoModelExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers"):
                raise ImportError(f"{name} is blocked: this test runs without the model extras")
            return None

    sys.meta_path.insert(0, _NoModelExtras())
""")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("no-models") / "s.h5"
    writer = StoreWriter(path)
    writer.begin_run("syn", synthetic_meta(2, 2, 12), fingerprint_keys=("model",))
    write_shard(writer, "syn", 0, synthetic_examples([["previous", "first"], ["broad", "next"]], 12))
    return path


def _python(code: str) -> subprocess.CompletedProcess[str]:
    unloaded = "\nassert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    script = BLOCK + textwrap.dedent(code) + unloaded
    return subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_the_block_works() -> None:
    done = _python("import torch")
    assert done.returncode != 0 and "blocked" in done.stderr


@pytest.mark.parametrize("command", [["inspect"], ["verify"], ["models"]])
def test_cli_without_torch(store: Path, command: list[str]) -> None:
    args = [*command, *(["--store", str(store)] if command != ["models"] else [])]
    done = _python(f"""
        import sys
        from typer.testing import CliRunner
        from attnviz.pipeline.cli import app
        result = CliRunner().invoke(app, {args!r})
        print(result.output)
        assert result.exit_code == 0, result.output
    """)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = {"inspect": "syn", "verify": "every example listed once", "models": "minilm"}[command[0]]
    assert expected in done.stdout


def test_reader_and_app_without_torch(store: Path) -> None:
    done = _python(f"""
        from attnviz.pipeline.store import StoreReader
        from attnviz.dashboard.app import create_app
        with StoreReader({str(store)!r}) as reader:
            assert reader.attention("syn", 3, 1, 1).shape[0] == reader.attention("syn", 3).shape[2]
            assert reader.metrics("syn", "entropy").shape == (12, 2, 2)
        app = create_app({str(store)!r})
        client = app.server.test_client()
        assert client.get("/").status_code == 200
        assert client.get("/healthz").status_code == 200
    """)
    assert done.returncode == 0, done.stdout + done.stderr


def test_torch_free_modules_of_the_model_and_precompute_packages() -> None:
    """The package ``__init__`` files, model descriptions, precompute options and run metadata need no torch."""
    done = _python("""
        import attnviz.pipeline.models, attnviz.pipeline.precompute
        from attnviz.pipeline.models.info import get_model_info
        from attnviz.pipeline.precompute.inputs import read_inputs
        from attnviz.pipeline.precompute.options import PrecomputeOptions
        from attnviz.pipeline.store.meta import run_meta
        assert get_model_info("minilm").family == "encoder"
        options = PrecomputeOptions(input="data/demo.jsonl", store="s.h5", overrides=["n_layer=2"])
        assert options.capture == ("attention", "embeddings") and options.overrides == {"n_layer": 2}
        assert run_meta({}).family == "encoder"
    """)
    assert done.returncode == 0, done.stdout + done.stderr
