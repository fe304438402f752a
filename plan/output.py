"""Output for every command: one set of format options, stdout for the report only, atomic
file writes, and deterministic JSON (sorted keys, no timestamps)."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class Format(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


# The output options every command shares.
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Write the report to FILE (atomically).")]


def clean(value: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(data: Any) -> str:
    return json.dumps(clean(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so a reader never sees half
    a report and a failure leaves the old file in place."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write` for bytes (images)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; reports are ordinary ones
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def console(stderr: bool = False) -> Console:
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=True,
                   width=None if sys.stdout.isatty() else 120)


def emit(text: str, out: Path | None) -> None:
    """Print the report, or write it atomically to `out`."""
    if out is not None:
        atomic_write(out, text)
    else:
        sys.stdout.write(text)


def fmt_si(value: float | None, unit: str, digits: int = 3) -> str:
    """A human number with an SI prefix: 3.35e12 B/s -> '3.35 TB/s'."""
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"),
                           (1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}g} {prefix}{unit}"
    return f"{value:.{digits}g} {unit}"


def parallelism_label(alloc: Mapping[str, Any]) -> str:
    """An allocation's parallelism (from a plan report's JSON) in a few characters: "tp4pp2"
    ("ep8" and "adp8" added where experts or attention spread), or a disaggregated
    allocation's units and pools, "1x(3P tp2pp4 + 1D tp8pp1)"."""
    def par(x: Mapping[str, Any]) -> str:
        ep = f"ep{x['ep']}" if x.get("ep", 1) != 1 else ""
        adp = f"adp{x['attention_dp']}" if x.get("attention_dp", 1) != 1 else ""
        return f"tp{x['tp']}pp{x['pp']}{ep}{adp}"

    d = alloc.get("disaggregated")
    if not d:
        return par(alloc)
    return (f"{d['units']}x({d['prefill']['per_unit']}P {par(d['prefill'])} + "
            f"{d['decode']['per_unit']}D {par(d['decode'])})")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_table(title: str, headers: list[str], rows: list[list[str]], fmt: Format,
                 out: Path | None) -> None:
    """A table on the terminal, as markdown (for CI job summaries), or into `out`."""
    if fmt == Format.markdown:
        emit(f"### {title}\n\n" + markdown_table(headers, rows), out)
        return
    table = Table(title=title, show_lines=False)
    for h in headers:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    if out is not None:
        cap = console()
        with cap.capture() as captured:
            cap.print(table)
        emit(captured.get(), out)
    else:
        console().print(table)
