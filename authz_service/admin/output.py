"""Printing results: an aligned table (or `key  value` lines) for people, `--json` for scripts."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def cell(value: Any) -> str:
    """How one value reads in a table: lists joined, booleans as yes/no, nothing as '-'."""
    if value is None or value == "" or value == [] or value == ():
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(item) for item in value)
    return str(value)


def _heading(key: str) -> str:
    return key.replace("_", " ").upper()


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Rows as a list of JSON objects, or as columns padded to their widest cell."""
    if as_json:
        print(json.dumps([{key: row.get(key) for key in columns} for row in rows], indent=2))
        return
    lines = [[_heading(key) for key in columns], *([cell(row.get(key)) for key in columns] for row in rows)]
    widths = [max(len(line[index]) for line in lines) for index in range(len(columns))]
    for line in lines:
        print("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip())
    if not rows:
        print("(none)")


def record(fields: Mapping[str, Any], as_json: bool) -> None:
    """One object: JSON, or one `key  value` line per field."""
    if as_json:
        print(json.dumps(fields, indent=2))
        return
    width = max((len(key) for key in fields), default=0)
    for key, value in fields.items():
        print(f"{key.replace('_', ' ').ljust(width)}  {cell(value)}")

