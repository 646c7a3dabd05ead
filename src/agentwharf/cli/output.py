"""Console output and error exits shared by every command."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentwharf.errors import AgentwharfError

console = Console()
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    # Escaped: messages name things like served_entities[0] or 'agentwharf[server]'.
    errors.print(f"[bold red]Error:[/] {escape(message)}", highlight=False)
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


def print_json(data) -> None:
    """JSON for scripts: plain, on stdout, one document."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str = "Nothing.") -> None:
    """A table for people on a terminal (long values fold, never cut), tab-separated lines when
    piped, so every id and name can be copied or cut out whole."""
    if not rows:
        console.print(empty)
        return
    if not console.is_terminal:
        for line in (headers, *rows):
            sys.stdout.write("\t".join("" if cell is None else Text.from_markup(str(cell)).plain for cell in line) + "\n")
        return
    table = Table(*headers)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(table)
