r"""What commands print: tables for people, the API's JSON (or YAML) for scripts.

Nothing the server sent reaches the terminal unescaped: table cells and error lines show
control and format characters as ``\uXXXX``, JSON writes them as JSON escapes, YAML as YAML
escapes, and no server text is ever read as rich markup.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hypersdk_cli.core.text import escape_json_text, printable

FORMATS = ("table", "json", "yaml")


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read its cell from one item."""

    header: str
    cell: Callable[[Any], Any]


def field(name: str, header: str | None = None) -> Column:
    """A column showing ``item[name]``."""
    return Column(header or name.upper().replace("_", " "), lambda item: item.get(name))


def cell_text(value: Any) -> str:
    """A value as one line of a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(cell_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell_text(v)}" for k, v in value.items()) or "-"
    return printable(str(value), one_line=True)


def as_json(data: Any) -> str:
    """The API's JSON, indented, with terminal-unsafe characters escaped."""
    return escape_json_text(json.dumps(data, indent=2, ensure_ascii=False))


def as_yaml(data: Any) -> str:
    """The same data as YAML (non-ASCII and control characters escaped)."""
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=False, default_flow_style=False))


UNWRAPPED_WIDTH = 10_000
"""Width of tables written to a pipe or file: one line per row, for grep and awk."""


def console(*, stderr: bool = False) -> Console:
    """A rich console that never interprets markup or emoji in what it prints.

    On a terminal tables fit its width; elsewhere rows are never wrapped.
    """
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else UNWRAPPED_WIDTH
    return Console(file=stream, width=width, markup=False, emoji=False, highlight=False)


def emit(
    data: Any,
    output: str,
    *,
    columns: Sequence[Column] | None = None,
    single: bool = False,
) -> None:
    """Print ``data`` (the API's JSON) as ``output``.

    In table form a list is a table of ``columns``; one object (``single``) is a two-column
    table of its fields (``columns`` then picks and orders them, if given).
    """
    if output == "json":
        click.echo(as_json(data))
    elif output == "yaml":
        click.echo(as_yaml(data), nl=False)
    elif single:
        emit_fields(data, columns)
    else:
        emit_table(data or [], columns or [])


def emit_table(items: Sequence[Any], columns: Sequence[Column]) -> None:
    """A table with one row per item."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column.header, overflow="fold")
    for item in items:
        table.add_row(*(Text(cell_text(column.cell(item))) for column in columns))
    if items:
        console().print(table)
    else:
        click.echo("No items.", err=True)


def emit_fields(item: Any, columns: Sequence[Column] | None = None) -> None:
    """One object as ``FIELD  value`` lines."""
    rows: list[tuple[str, Any]]
    if columns:
        rows = [(column.header, column.cell(item)) for column in columns]
    elif isinstance(item, dict):
        rows = [(key.upper().replace("_", " "), value) for key, value in item.items()]
    else:
        rows = [("VALUE", item)]
    table = Table(box=None, show_header=False, pad_edge=False, show_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for header, value in rows:
        table.add_row(Text(printable(header, one_line=True)), Text(cell_text(value)))
    console().print(table)


def note(message: str) -> None:
    """A line for people, on stderr (never mixed into what a script parses)."""
    click.echo(printable(message, one_line=True), err=True)


def done(message: str, output: str) -> None:
    """A confirmation of a command whose API answer is empty (204): shown in table form only."""
    if output == "table":
        click.echo(printable(message, one_line=True))
