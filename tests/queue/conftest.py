"""The queue tests' fixture: worker processes, all stopped by PID when a test ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from queuekit import Workers


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Start worker processes; all are stopped (by PID) when the test ends."""
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
