"""Shared test set-up: offline hub, one torch thread, browser options, and the session-wide fixtures.

``dashboard_store`` is built once per test session: under pytest-xdist the workers share one copy (the first
to ask builds it under a file lock; the others wait for it). Tests only read it; a test that changes a store
copies it first. Each xdist worker starts its ``dash_duo`` servers on its own range of ports. ``make test``
distributes whole modules (``--dist loadfile``), so a module-scoped fixture is still built once.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from dashboard_fixtures import LiveServer, build_dashboard_store, start_live_server  # noqa: E402
from filelock import FileLock  # noqa: E402

from attnviz.pipeline.store import StoreReader  # noqa: E402

#: The xdist worker running this process ("gw0", "gw1", ...), or "" without xdist.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")


def pytest_configure(config: pytest.Config) -> None:
    """Give each xdist worker its own ``dash_duo`` port range (dash counts up from 58050 in every process)."""
    if WORKER.startswith("gw"):
        from dash.testing.application_runners import BaseDashRunner

        BaseDashRunner._next_port = 58050 + 100 * int(WORKER[2:])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip browser tests, with the reason, where Chromium or its driver is missing."""
    if shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser")):
        return
    skip = pytest.mark.skip(reason="needs Debian chromium + chromium-driver (make test installs them with apt)")
    for item in items:
        if "browser" in item.keywords or "dash_duo" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def dashboard_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a store with the three tiny runs of :mod:`dashboard_fixtures` (built once per session)."""
    shared = tmp_path_factory.getbasetemp()
    if WORKER:  # the workers' temporary folders share this parent
        shared = shared.parent
    path = shared / "dashboard" / "demo.h5"
    done = path.with_name("complete")
    with FileLock(str(shared / "dashboard.lock")):
        if not done.exists():
            if path.parent.exists():  # a build that failed in another worker: start again
                shutil.rmtree(path.parent)
            build_dashboard_store(path)
            done.touch()
    return path


@pytest.fixture(scope="module")
def reader(dashboard_store: Path) -> StoreReader:
    """A reader of :func:`dashboard_store` (one per module)."""
    return StoreReader(dashboard_store)


@pytest.fixture(scope="module")
def headless(pytestconfig: pytest.Config) -> None:
    """dash_duo reads --headless from the command line; there is no display here, so browser modules force it
    (``pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("headless")]``)."""
    pytestconfig.option.headless = True


@pytest.fixture(scope="module")
def live_server(dashboard_store: Path) -> Iterator[LiveServer]:
    """The dashboard for :func:`dashboard_store`, served by a separate process (module scope)."""
    server = start_live_server(dashboard_store)
    try:
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
