"""The ``clusterinval`` command line: invalidate, count, a local cluster, a demo (the cli extra)."""

from __future__ import annotations

import sys

__all__ = ["main"]

# What the command line needs beyond the library: installed by the cli extra.
_CLI_PACKAGES = frozenset({"typer", "rich", "click"})


def main() -> None:
    """Run the command line, or say how to install it when its extra is missing."""
    try:
        from clusterinval.cli.main import main as run
    except ModuleNotFoundError as exc:
        if exc.name not in _CLI_PACKAGES:
            raise
        sys.stderr.write(
            "clusterinval: the command line needs the cli extra, which is not installed "
            f"({exc.name} is missing):\n    pip install 'clusterinval[cli]'\n")
        raise SystemExit(2) from None
    run()
