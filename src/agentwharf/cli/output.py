"""Console output and error exits shared by every command."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console

from agentwharf.errors import AgentwharfError

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    errors.print(f"[bold red]Error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def handle_errors(command: Callable) -> Callable:
    """Turn the platform's JSON errors into one red line and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except AgentwharfError as error:
            fail(f"{error.message} ({error.error_code})")
        except TimeoutError as error:
            fail(str(error))

    return wrapper
