"""The command classes every command uses: JSON-aware usage errors, flags shown without a type."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from clusterinval.cli.output import print_json

__all__ = ["Command", "Group", "json_requested"]

_JSON_FLAG = "--json"


def json_requested(args: Sequence[str]) -> bool:
    """Whether the command line asks for JSON output (``--json`` before any ``--``)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == _JSON_FLAG:
            return True
    return False


def _plain_flags(params: list[Any]) -> list[Any]:
    # Typer shows a type such as <bool> for every option; an on/off flag or a counter (-vv)
    # takes no value, so its type column stays empty (an empty metavar, printed as is).
    for param in params:
        takes_no_value = getattr(param, "is_bool_flag", False) or getattr(param, "count", False)
        if takes_no_value and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose on/off flags show no value type in ``--help``."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The command's parameters, flags marked as taking no value."""
        return _plain_flags(super().get_params(ctx))


class Group(TyperGroup):
    """The root group: with ``--json`` anywhere, a usage error is one JSON object on stdout too."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The group's parameters, flags marked as taking no value."""
        return _plain_flags(super().get_params(ctx))

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; JSON callers get ``{"error", "exit_code"}`` for usage errors."""
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode or not json_requested(argv):
            return super().main(argv, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except typer.Abort:
            print_json({"error": "aborted", "exit_code": 1})
            sys.stderr.write("Aborted!\n")
            sys.exit(1)
        except typer.TyperException as exc:
            exit_code = int(getattr(exc, "exit_code", 2))
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            print_json({"error": message, "exit_code": exit_code})
            _show_usage_error(exc)
            sys.exit(exit_code)
        # Without standalone mode a command's typer.Exit comes back as its exit code.
        sys.exit(code if isinstance(code, int) else 0)


def _show_usage_error(exc: Exception) -> None:
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
    except Exception:  # presentation only: never hide the error itself
        sys.stderr.write(f"error: {exc}\n")
