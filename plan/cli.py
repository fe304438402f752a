"""The `fleetplan` command line: a thin layer over the library. Library errors (SpecError)
become one line on stderr and exit code 2 here, and only here."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.table import Table

from .. import __version__
from ..hardware.catalog import CATALOG_SECTIONS, Catalog, UnknownIdError, load_catalog
from ..hardware.efficiency import CalibrationSet, parse_calibration
from ..hardware.errors import SpecError
from ..hardware.yamlio import load_yaml_file
from . import describe
from .estimate import EstimateRequest, run_estimate
from .measurements import kind_of, read_inference
from .output import Format, console, emit, markdown_table, to_json
from .validate import summary_rows, validate_inference

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Analytical performance modelling and capacity planning for AI "
                       "workloads.")
catalog_app = typer.Typer(no_args_is_help=True, help="Browse the hardware and model catalog.")
app.add_typer(catalog_app, name="catalog")


class Section(StrEnum):
    accelerators = "accelerators"
    models = "models"
    interconnects = "interconnects"
    memory = "memory"
    engines = "engines"


class Scenario(StrEnum):
    static = "static"
    max_throughput = "max_throughput"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Write the report to FILE (atomically).")]
CalibOpt = Annotated[Path | None, typer.Option(
    "--calibration", help="Efficiency parameters from `fleetplan calibrate` (YAML).")]


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"fleetplan: error: {message}\n")
    sys.exit(code)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"fleetplan {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True,
                                                help="Print the version and exit.")] = False,
          ) -> None:
    """fleetplan: roofline and queueing models feed solvers that size accelerator fleets."""


def _calibration(catalog: Catalog, path: Path | None) -> CalibrationSet:
    if path is None:
        return catalog.calibration
    return parse_calibration(load_yaml_file(path), str(path), base=catalog.calibration)


def _render_table(title: str, headers: list[str], rows: list[list[str]], fmt: Format,
                  out: Path | None) -> None:
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


# ----------------------------------------------------------------------------- catalog


@catalog_app.command("list")
def catalog_list(section: Annotated[Section, typer.Argument(help="Which part of the catalog.")]
                 = Section.accelerators, fmt: FormatOpt = Format.table,
                 out: OutOpt = None) -> None:
    """List accelerators, models, interconnects, memory tiers or engines."""
    entries = describe.section(load_catalog(), section.value)
    if fmt == Format.json:
        emit(to_json(entries), out)
        return
    headers, rows = describe.rows(section.value, entries)
    _render_table(f"fleetplan catalog: {section.value}", headers, rows, fmt, out)


@catalog_app.command("show")
def catalog_show(entry_id: Annotated[str, typer.Argument(metavar="ID",
                                                         help="A catalog id.")],
                 fmt: FormatOpt = Format.table, out: OutOpt = None) -> None:
    """Show one catalog entry with every figure and its source."""
    catalog = load_catalog()
    found: dict[str, Any] | None = None
    for name in CATALOG_SECTIONS:
        for entry in describe.section(catalog, name):
            if entry["id"] == entry_id:
                found = entry
    if found is None:
        known = [e for n in CATALOG_SECTIONS for e in describe.section(catalog, n)]
        raise UnknownIdError("catalog entries", entry_id, [e["id"] for e in known])
    if fmt == Format.json:
        emit(to_json(found), out)
        return
    rows = [[k, yaml.safe_dump(v, sort_keys=True, width=90).strip()
             if isinstance(v, dict | list) else str(v)] for k, v in sorted(found.items())]
    _render_table(entry_id, ["field", "value"], rows, fmt, out)


# ----------------------------------------------------------------------------- estimate


@app.command()
def estimate(
    model: Annotated[str, typer.Option(help="Catalog model id or a config.json path.")],
    accelerator: Annotated[str, typer.Option(help="Catalog accelerator id.")],
    input_len: Annotated[int, typer.Option(help="Prompt tokens per request.")],
    output_len: Annotated[int, typer.Option(help="Generated tokens per request.")],
    count: Annotated[int | None, typer.Option(help="Accelerators in the replica "
                                                   "(= tp x pp).")] = None,
    tp: Annotated[int, typer.Option(help="Tensor-parallel degree.")] = 1,
    pp: Annotated[int, typer.Option(help="Pipeline-parallel degree.")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree (divides tp).")] = 1,
    precision: Annotated[str, typer.Option(help="Weight and GEMM precision.")] = "bf16",
    kv_precision: Annotated[str | None, typer.Option(help="KV-cache precision.")] = None,
    batch: Annotated[int | None, typer.Option(help="Requests in the batch (static) or the "
                                                   "batch cap (max_throughput).")] = None,
    scenario: Annotated[Scenario, typer.Option(help="static: the batch starts together; "
                                               "max_throughput: unlimited arrivals.")]
    = Scenario.static,
    engine: Annotated[str, typer.Option(help="Serving engine profile.")] = "trtllm",
    prefill_chunk: Annotated[int | None, typer.Option(
        help="Token budget per step (chunked prefill).")] = None,
    kv_offload: Annotated[str | None, typer.Option(
        help="Host memory tier id that takes KV cache past device memory.")] = None,
    draft_len: Annotated[int, typer.Option(help="Speculative decoding: drafted tokens "
                                                "per step (0 = off).")] = 0,
    acceptance: Annotated[float, typer.Option(help="Speculative decoding: acceptance rate "
                                                   "per drafted token.")] = 0.7,
    draft_model: Annotated[str | None, typer.Option(help="Draft model id (default: drafting "
                                                         "heads inside the target).")] = None,
    calibration: CalibOpt = None, fmt: FormatOpt = Format.table, out: OutOpt = None,
) -> None:
    """Predict TTFT, TPOT, throughput, memory and energy of one configuration."""
    catalog = load_catalog()
    req = EstimateRequest(model, accelerator, input_len, output_len, count, tp, pp, ep,
                          precision, kv_precision, batch, scenario.value, engine, prefill_chunk,
                          kv_offload, draft_len, acceptance, draft_model)
    report = run_estimate(req, catalog, _calibration(catalog, calibration))
    if fmt == Format.json:
        emit(to_json(report), out)
        return
    from .output import fmt_si
    mem = report["memory"]
    rows = [
        ["feasible", str(report["feasible"])],
        ["TTFT", fmt_si(report["ttft_s"], "s")],
        ["TPOT", fmt_si(report["tpot_s"], "s")],
        ["output tokens/s (replica)", f"{report['output_tok_s_total']:.1f}"],
        ["output tokens/s per accelerator", f"{report['output_tok_s_per_accelerator']:.1f}"],
        ["batch (limit)", f"{report['batch']:.0f} ({report['batch_limit']})"],
        ["prefill bound", report["bound"]["prefill"]],
        ["decode bound", report["bound"]["decode"]],
        ["energy per output token", fmt_si(report["energy_j_per_token"], "J")],
        ["weights per accelerator", fmt_si(mem["weights_bytes"], "B")],
        ["KV cache capacity per accelerator", fmt_si(mem["kv_cache_capacity_bytes"], "B")],
        ["KV capacity (tokens)", f"{mem['kv_capacity_tokens']:.0f}"],
    ] + [["warning", w] for w in report["warnings"]]
    i = report["inputs"]
    title = (f"{i['model']} on {i['count']}x {i['accelerator']} (tp={i['tp']} pp={i['pp']}) "
             f"{i['precision']}, {i['scenario']}")
    _render_table(title, ["metric", "value"], rows, fmt, out)


# ----------------------------------------------------------------------------- validate


@app.command()
def validate(measurements: Annotated[Path, typer.Argument(help="Measurement CSV file.")],
             calibration: CalibOpt = None, fmt: FormatOpt = Format.table,
             out: OutOpt = None) -> None:
    """Predict every row of a measurement file and report the errors."""
    catalog = load_catalog()
    calib = _calibration(catalog, calibration)
    if kind_of(measurements) == "training":
        _fail(f"{measurements}: training measurements need the training model, which is not in "
              "this build")
    report = validate_inference(read_inference(measurements), catalog, calib)
    if fmt == Format.json:
        emit(to_json(report), out)
        return
    headers, rows = summary_rows(report)
    _render_table(f"fleetplan validate {measurements.name}", headers, rows, fmt, out)


@app.command()
def calibrate(measurements: Annotated[Path, typer.Argument(help="Measurement CSV file.")],
              output: Annotated[Path, typer.Option("--output", "-o",
                                                   help="Where to write the YAML.")],
              calibration: CalibOpt = None,
              cross_validate: Annotated[bool, typer.Option(
                  "--cross-validate", help="Also report leave-one-accelerator-out errors "
                  "(what hardware without measurements should expect).")] = False) -> None:
    """Fit efficiency parameters per accelerator to measurements (least squares on log
    error) and write them as YAML for --calibration. The fit starts from (and is weakly
    pulled towards) the physical defaults, or the --calibration file when given."""
    from ..hardware.efficiency import Efficiency
    from ..solvers.calibration import fit

    catalog = load_catalog()
    base = CalibrationSet(Efficiency(), {}, {}, "physical defaults") if calibration is None \
        else _calibration(catalog, calibration)
    rows = read_inference(measurements)
    err = console(stderr=True)
    report = fit(rows, catalog, base, progress=err.print)
    mapping = report.calibration.to_mapping()
    mapping["source"] = (f"fleetplan calibrate {measurements.name}: {report.rows_used} rows, "
                         "fitted per accelerator; default = median of the fitted accelerators")
    header = ("# Efficiency parameters fitted by `fleetplan calibrate`; use with "
              "--calibration FILE.\n")
    from .output import atomic_write
    atomic_write(output, header + yaml.safe_dump(mapping, sort_keys=True))
    for name in sorted(report.before):
        err.print(f"{name:16s} median APE {report.before[name]:7.1%} -> "
                  f"{report.after[name]:7.1%}")
    err.print(f"wrote {output} ({report.seconds:.1f} s)")
    if cross_validate:
        from ..solvers.calibration import cross_validate as run_cv

        held = run_cv(rows, catalog, base, progress=err.print)
        headers = ["held-out accelerator", "rows", "held-out median APE", "held-out p90 APE",
                   "in-sample median APE"]
        body = [[acc, f"{v['rows']:.0f}", f"{v['held_out_median_ape']:.1%}",
                 f"{v['held_out_p90_ape']:.1%}", f"{v['in_sample_median_ape']:.1%}"]
                for acc, v in held.items()]
        _render_table("leave-one-accelerator-out", headers, body, Format.table, None)


def main() -> None:
    """Console entry point: usage errors exit 2 with the parser's message; every library error
    (bad input file, unknown id, invalid value) is one line on stderr and exit code 2."""
    try:
        app()
    except SpecError as err:
        _fail(str(err))
    except BrokenPipeError:
        sys.exit(0)
