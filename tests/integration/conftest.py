"""Fixtures of the real-process tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Store
from tests.integration.test_processes import Workers


@pytest.fixture
def workers(store: Store, tmp_path: Path) -> Iterator[Workers]:
    """Worker processes on this test's store, killed at the end."""
    w = Workers(store, tmp_path)
    yield w
    w.stop_all()
