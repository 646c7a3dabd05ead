"""`agentwharf inference export`: the inference table to JSON lines, CSV or Parquet."""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn

from agentwharf.cli.connection import HomeOption, HostOption, connect
from agentwharf.cli.output import errors, fail, handle_errors

app = typer.Typer(help="The inference table: one row per served request.", no_args_is_help=True)

#: The inference table's columns in export order, with their Arrow types (for Parquet).
COLUMN_TYPES = {
    "request_id": "string", "client_request_id": "string", "timestamp_ms": "int64", "endpoint": "string",
    "served_entity": "string", "model_name": "string", "model_version": "string", "status_code": "int32",
    "latency_ms": "float64", "caller": "string", "route": "string", "stream": "bool_", "request": "string",
    "response": "string", "request_truncated": "bool_", "response_truncated": "bool_", "trace_id": "string",
    "error": "string", "prompt_tokens": "int64", "completion_tokens": "int64", "total_tokens": "int64",
    "usage_estimated": "bool_", "shadow_of": "string",
}
COLUMNS = list(COLUMN_TYPES)


class Format(str, Enum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


@app.command()
@handle_errors
def export(
    endpoint: str = typer.Argument(..., help="Endpoint name"),
    format: Format = typer.Option(Format.jsonl, "--format", "-f", help="jsonl, csv or parquet"),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout; required for parquet)"),
    since: str = typer.Option(None, "--since", help="Only rows at or after this time (epoch ms or ISO 8601)"),
    until: str = typer.Option(None, "--until", help="Only rows before this time"),
    status: str = typer.Option(None, "--status", help="200, 5xx or error"),
    host: HostOption = None,
    home: HomeOption = None,
) -> None:
    """Export an endpoint's inference table (JSON lines on stdout by default), with progress
    on stderr."""
    if format is Format.parquet and output is None:
        errors.print("[bold red]Error:[/] --output is required for parquet")
        raise typer.Exit(1)
    client = connect(host, home)
    pages = client.inference_rows(endpoint, since=since, until=until, status=status, max_results=5000)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=errors, transient=True) as progress:
        task = progress.add_task(f"Exporting {endpoint}: 0 rows", total=None)
        total = 0

        def counted():
            nonlocal total
            for page in pages:
                total += len(page)
                progress.update(task, description=f"Exporting {endpoint}: {total} rows")
                yield page

        _WRITERS[format](counted(), output)
    errors.print(f"Exported {total} rows of {endpoint}" + (f" to {output}" if output else ""))


def _open(output: Path | None, newline: str | None = None):
    return open(output, "w", newline=newline, encoding="utf-8") if output else _Stdout()


class _Stdout:
    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()


def _write_jsonl(pages, output: Path | None) -> None:
    with _open(output) as out:
        for page in pages:
            for row in page:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")


def _write_csv(pages, output: Path | None) -> None:
    with _open(output, newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for page in pages:
            writer.writerows(page)


def _write_parquet(pages, output: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        fail("Parquet export needs pyarrow: pip install pyarrow (or 'agentwharf[server]')")

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMN_TYPES.items()])
    # Written page by page, so a large export never holds the whole table in memory.
    with pq.ParquetWriter(output, schema) as writer:
        for page in pages:
            if page:
                writer.write_table(pa.Table.from_pylist(page, schema=schema))


_WRITERS = {Format.jsonl: _write_jsonl, Format.csv: _write_csv, Format.parquet: _write_parquet}
