"""How every `farm` command reports an error: one line on stderr, one prefix, exit code 1."""

from __future__ import annotations

from typing import NoReturn

import typer

from farm.errors import FarmError

ERROR_PREFIX = "farm: error: "
EXIT_ERROR = 1


def error_line(error: FarmError | str) -> str:
    message = error.one_line() if isinstance(error, FarmError) else " ".join(str(error).split())
    return f"{ERROR_PREFIX}{message}"


def fail(error: FarmError | str) -> NoReturn:
    """Print the error's one line and leave with `EXIT_ERROR` (inside a Typer command)."""
    typer.echo(error_line(error), err=True)
    raise typer.Exit(code=EXIT_ERROR)
