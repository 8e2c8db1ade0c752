"""Shared test set-up: offline hub, one torch thread, browser options."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402

import pytest  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip browser tests, with the reason, where Chromium or its driver is missing."""
    if shutil.which("chromedriver") and (shutil.which("chromium") or shutil.which("chromium-browser")):
        return
    skip = pytest.mark.skip(reason="needs Debian chromium + chromium-driver (make test installs them with apt)")
    for item in items:
        if "browser" in item.keywords or "dash_duo" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)
