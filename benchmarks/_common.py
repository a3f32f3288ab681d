"""Shared helpers of the benchmark scripts: a results folder and table printing."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def emit(name: str, rows, columns: list[str], as_json: bool, payload=None) -> None:
    """Print a table of ``rows`` (dicts), write JSON to results/NAME.json, and with
    ``as_json`` print the JSON payload as the last line."""
    payload = rows if payload is None else payload
    widths = [max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(_cell(r.get(c)).rjust(w) for c, w in zip(columns, widths)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        print(json.dumps(payload))


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
