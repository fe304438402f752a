"""The `fleetplan` command line: a thin layer over the library. Library errors (SpecError)
become one line on stderr and exit code 2 here, and only here.

Each command imports what it needs when it runs, so that `fleetplan plan` loads the planning
path only (not training, measurements, plotting or scipy.optimize); the module level keeps what
the option declarations and the help text need. Annotations here are objects, not strings (no
`from __future__ import annotations`): typer reads every command's signature at each start, and
a string annotation costs it an `eval` apiece (40 ms in all)."""

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
import yaml

from .. import __version__
from ..hardware.catalog import (
    CATALOG_SECTIONS,
    Catalog,
    UnknownIdError,
    load_catalog,
    versioned_id,
)
from ..hardware.errors import SpecError
from .output import (
    Format,
    FormatOpt,
    OutOpt,
    console,
    emit,
    fmt_si,
    markdown_table,
    render_table,
    to_json,
)
from .train_cli import train_app

if TYPE_CHECKING:
    from ..hardware.efficiency import CalibrationSet
    from .estimate import EstimateRequest

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False,
                  help="Analytical performance modelling and capacity planning for AI "
                       "workloads.")
catalog_app = typer.Typer(no_args_is_help=True, help="Browse the hardware and model catalog.")
app.add_typer(catalog_app, name="catalog")
app.add_typer(train_app, name="train")


class Section(StrEnum):
    accelerators = "accelerators"
    models = "models"
    interconnects = "interconnects"
    memory = "memory"
    engines = "engines"


class Arrival(StrEnum):
    poisson = "poisson"
    gamma = "gamma"


class Scenario(StrEnum):
    static = "static"
    max_throughput = "max_throughput"


CalibOpt = Annotated[Path | None, typer.Option(
    "--calibration", help="Efficiency parameters from `fleetplan calibrate` (YAML).")]


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"fleetplan: error: {message}\n")
    sys.exit(code)


def _infeasible_exit(infeasible: bool) -> None:
    """Exit code 1 when the answer is that it cannot be done (the report is still printed)."""
    if infeasible:
        raise typer.Exit(1)


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


def _calibration(catalog: Catalog, path: Path | None) -> "CalibrationSet":
    from .files import load_calibration

    return catalog.calibration if path is None else load_calibration(catalog, path)


def _render_table(title: str, headers: list[str], rows: list[list[str]], fmt: Format,
                  out: Path | None) -> None:
    render_table(title, headers, rows, fmt, out)


# ----------------------------------------------------------------------------- catalog


@catalog_app.command("list")
def catalog_list(section: Annotated[Section, typer.Argument(help="Which part of the catalog.")]
                 = Section.accelerators, fmt: FormatOpt = Format.table,
                 out: OutOpt = None) -> None:
    """List accelerators, models, interconnects, memory tiers or engines."""
    from . import describe

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
    from . import describe

    catalog = load_catalog()
    if "@" in entry_id:  # "trtllm@0.14.0": the engine entry that describes that release
        entry_id = versioned_id(catalog.engines, entry_id)
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


# Options shared by every command that describes one replica and its load.
ModelOpt = Annotated[str, typer.Option("--model", help="Catalog model id or a config.json path.")]
AccOpt = Annotated[str, typer.Option("--accelerator", help="Catalog accelerator id.")]
InOpt = Annotated[int, typer.Option("--input-len", help="Prompt tokens per request (mean when "
                                                        "--input-dist is given).")]
OutLenOpt = Annotated[int, typer.Option("--output-len", help="Generated tokens per request.")]
CountOpt = Annotated[int | None, typer.Option("--count", help="Accelerators in the replica "
                                                              "(= tp x pp).")]
TpOpt = Annotated[int, typer.Option("--tp", help="Tensor-parallel degree.")]
PpOpt = Annotated[int, typer.Option("--pp", help="Pipeline-parallel degree.")]
EpOpt = Annotated[int, typer.Option("--ep", help="Expert-parallel degree (divides tp).")]
PrecOpt = Annotated[str, typer.Option("--precision", help="Weight and GEMM precision.")]
KvPrecOpt = Annotated[str | None, typer.Option("--kv-precision", help="KV-cache precision.")]
EngineOpt = Annotated[str, typer.Option("--engine", help="Serving engine profile "
                                                         "(fleetplan catalog list engines).")]
ChunkOpt = Annotated[int | None, typer.Option("--prefill-chunk",
                                              help="Token budget per step (chunked prefill).")]
OffloadOpt = Annotated[str | None, typer.Option(
    "--kv-offload", help="Host memory tier id that takes KV cache past device memory.")]
DraftOpt = Annotated[int, typer.Option("--draft-len", help="Speculative decoding: drafted "
                                                           "tokens per step (0 = off).")]
AcceptOpt = Annotated[float, typer.Option("--acceptance", help="Speculative decoding: "
                                                               "acceptance per drafted token.")]
DraftModelOpt = Annotated[str | None, typer.Option(
    "--draft-model", help="Draft model id (default: drafting heads inside the target).")]
MaxBatchOpt = Annotated[int | None, typer.Option("--max-batch", help="Cap on running "
                                                                     "sequences.")]
ArrivalOpt = Annotated[Arrival, typer.Option("--arrival", help="Arrival process.")]
CvOpt = Annotated[float, typer.Option("--cv", help="Coefficient of variation of gamma "
                                                   "inter-arrival times.")]
InDistOpt = Annotated[str | None, typer.Option("--input-dist", help="Prompt lengths: "
                                               "'fixed:N', 'lognormal:MEAN:STD' or "
                                               "'hist:LEN=WEIGHT,...'.")]
OutDistOpt = Annotated[str | None, typer.Option("--output-dist", help="Output lengths: "
                                                "'fixed:N', 'lognormal:MEAN:STD' or "
                                                "'hist:LEN=WEIGHT,...'.")]
PrefixOpt = Annotated[float, typer.Option("--prefix-hit", help="Fraction of prompt tokens a "
                                                               "prefix cache saves.")]
AttnDpOpt = Annotated[int | None, typer.Option(
    "--attention-dp", help="Attention data-parallel groups inside the tensor group (divides "
                           "tp): each attends for its own sequences (default: the engine's "
                           "choice).")]
ClassOpt = Annotated[list[str] | None, typer.Option(
    "--class", help="A request class sharing the replica, repeatable: 'name=chat share=0.8 "
                    "input=lognormal:512:256 output=256 ttft_p99=0.5 tpot_p99=0.05' (lengths "
                    "as fixed:N, lognormal:MEAN:STD, hist:LEN=W,... or N tokens; objectives in "
                    "s). The classes make up the request stream instead of --input-len, "
                    "--output-len and their distributions; shares sum to 1.")]


def _request(model: str, accelerator: str, input_len: int, output_len: int, count: int | None,
             tp: int, pp: int, ep: int, precision: str, kv_precision: str | None, batch: int | None,
             scenario: str, engine: str, prefill_chunk: int | None, kv_offload: str | None,
             draft_len: int, acceptance: float, draft_model: str | None, rate: float | None,
             arrival: Arrival, cv: float, input_dist: str | None, output_dist: str | None,
             prefix_hit: float) -> "EstimateRequest":
    from .estimate import EstimateRequest

    return EstimateRequest(model, accelerator, input_len, output_len, count, tp, pp, ep,
                           precision, kv_precision, batch, scenario, engine, prefill_chunk,
                           kv_offload, draft_len, acceptance, draft_model, rate, arrival.value,
                           cv, input_dist, output_dist, prefix_hit)


def _kv_table(rows: list[list[str]], title: str, fmt: Format, out: Path | None) -> None:
    _render_table(title, ["metric", "value"], rows, fmt, out)


def _class_rows(lat: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end to end")):
        p = lat[name]
        rows.append([f"{label} mean / p50 / p90 / p99",
                     " / ".join(fmt_si(p[k], "s") for k in ("mean", "p50", "p90", "p99"))])
    return rows


def _latency_rows(report: dict[str, Any], capacity_of: str = "per replica") \
        -> list[list[str]]:
    rows = _class_rows(report["latency"])
    util = report["utilization"]
    rows.append(["utilization", f"{util:.1%}" if util is not None and util < 1e6
                 else "- (no capacity)"])
    rows.append([f"capacity {capacity_of}", f"{report['capacity_rps']:.3g} req/s"])
    rows.append(["mean running sequences", f"{report['mean_batch']:.1f}"])
    return rows


@app.command()
def estimate(
    model: ModelOpt, accelerator: AccOpt, input_len: InOpt, output_len: OutLenOpt,
    count: CountOpt = None, tp: TpOpt = 1, pp: PpOpt = 1, ep: EpOpt = 1,
    precision: PrecOpt = "bf16", kv_precision: KvPrecOpt = None,
    batch: Annotated[int | None, typer.Option(help="Requests in the batch (static) or the "
                                                   "batch cap (otherwise).")] = None,
    scenario: Annotated[Scenario, typer.Option(help="static: the batch starts together; "
                                               "max_throughput: unlimited arrivals.")]
    = Scenario.static,
    engine: EngineOpt = "trtllm", prefill_chunk: ChunkOpt = None, kv_offload: OffloadOpt = None,
    draft_len: DraftOpt = 0, acceptance: AcceptOpt = 0.7, draft_model: DraftModelOpt = None,
    rate: Annotated[float | None, typer.Option(
        help="Requests per second: adds latency percentiles under this load.")] = None,
    max_batch: MaxBatchOpt = None, arrival: ArrivalOpt = Arrival.poisson, cv: CvOpt = 1.0,
    input_dist: InDistOpt = None, output_dist: OutDistOpt = None, prefix_hit: PrefixOpt = 0.0,
    trace: Annotated[Path | None, typer.Option(
        help="A CSV of arrival_s,input_len,output_len: its rate, burstiness and lengths set "
             "the load.")] = None,
    disaggregate: Annotated[str | None, typer.Option(
        help="With --rate: also serve it with P prefill and D decode replicas ('P:D'), the "
             "KV cache over the NICs.")]
    = None,
    prefill_tp: Annotated[int | None, typer.Option(
        help="With --disaggregate: the prefill replicas' TP (default --tp).")] = None,
    prefill_pp: Annotated[int | None, typer.Option(
        help="With --disaggregate: the prefill replicas' PP (default --pp).")] = None,
    prefill_ep: Annotated[int | None, typer.Option(
        help="With --disaggregate: the prefill replicas' EP (default --ep).")] = None,
    kv_link: Annotated[str, typer.Option(
        help="With --disaggregate: scale-out (KV caches over the NICs) or scale-up (the "
             "unit in one scale-up domain).")] = "scale-out",
    attention_dp: AttnDpOpt = None, classes: ClassOpt = None,
    calibration: CalibOpt = None, fmt: FormatOpt = Format.table, out: OutOpt = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw the accelerator's roofline with the model's prefill and "
                       "decode operators on it (FILE.png or FILE.svg).")] = None,
) -> None:
    """Predict TTFT, TPOT, throughput, memory and energy of one configuration; with --rate
    (or --trace), latency percentiles under that load."""
    from . import api

    if plot is not None:
        from . import plots

        plots.check_target(plot)
    catalog = load_catalog()
    result = api.estimate(model, accelerator, input_len=input_len, output_len=output_len,
                          count=count, tp=tp, pp=pp, ep=ep, precision=precision,
                          kv_precision=kv_precision, batch=batch, max_batch=max_batch,
                          scenario=scenario.value, engine=engine, prefill_chunk=prefill_chunk,
                          kv_offload=kv_offload, draft_len=draft_len, acceptance=acceptance,
                          draft_model=draft_model, rate_rps=rate, arrival=arrival.value,
                          arrival_cv=cv, input_dist=input_dist, output_dist=output_dist,
                          prefix_hit=prefix_hit, trace=trace, disaggregate=disaggregate,
                          prefill_tp=prefill_tp, prefill_pp=prefill_pp, prefill_ep=prefill_ep,
                          kv_link=kv_link,
                          attention_dp=attention_dp, classes=classes,
                          calibration=calibration, catalog=catalog)
    report, rate = dict(result.report), result.request.rate_rps
    if plot is not None:
        from . import plots

        plots.render_roofline(plots.roofline_data(result.request, catalog,
                                                  _calibration(catalog, calibration)), plot)
    infeasible = result.infeasible
    if fmt == Format.json:
        emit(result.to_json(), out)
        _infeasible_exit(infeasible)
        return
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
    ]
    if "latency" in report:
        rows += [[f"under {rate:g} req/s", ""], *_latency_rows(report)]
    for name, c in report.get("latency_by_class", {}).items():
        met = {True: "meets its SLO", False: "misses its SLO", None: "no SLO"}[c["meets_slo"]]
        rows += [[f"class {name} ({c['share']:.0%} of requests, {met})", ""],
                 *_class_rows(c["latency"])]
    if "disaggregated" in report:
        dis = report["disaggregated"]
        rows += [[f"{dis['prefill_replicas']} prefill (tp={dis['prefill_tp']} "
                  f"pp={dis['prefill_pp']}) : {dis['decode_replicas']} decode replicas, "
                  f"{rate:g} req/s in all", ""],
                 *_latency_rows(dis, "of the two pools")]
    rows += [["warning", w] for w in report["warnings"]]
    i = report["inputs"]
    title = (f"{i['model']} on {i['count']}x {i['accelerator']} (tp={i['tp']} pp={i['pp']}) "
             f"{i['precision']}, {i['scenario'] if rate is None else 'online'}")
    _kv_table(rows, title, fmt, out)
    _infeasible_exit(infeasible)


@app.command("goodput")
def goodput_cmd(
    model: ModelOpt, accelerator: AccOpt, input_len: InOpt, output_len: OutLenOpt,
    slo_ttft_p99: Annotated[float | None, typer.Option(help="p99 TTFT bound, s.")] = None,
    slo_tpot_p99: Annotated[float | None, typer.Option(help="p99 TPOT bound, s.")] = None,
    slo_ttft_p90: Annotated[float | None, typer.Option(help="p90 TTFT bound, s.")] = None,
    slo_tpot_p90: Annotated[float | None, typer.Option(help="p90 TPOT bound, s.")] = None,
    slo_e2e_p99: Annotated[float | None, typer.Option(help="p99 end-to-end bound, s.")] = None,
    count: CountOpt = None, tp: TpOpt = 1, pp: PpOpt = 1, ep: EpOpt = 1,
    precision: PrecOpt = "bf16", kv_precision: KvPrecOpt = None, engine: EngineOpt = "trtllm",
    prefill_chunk: ChunkOpt = None, kv_offload: OffloadOpt = None, draft_len: DraftOpt = 0,
    acceptance: AcceptOpt = 0.7, draft_model: DraftModelOpt = None,
    max_batch: MaxBatchOpt = None, arrival: ArrivalOpt = Arrival.poisson, cv: CvOpt = 1.0,
    input_dist: InDistOpt = None, output_dist: OutDistOpt = None, prefix_hit: PrefixOpt = 0.0,
    attention_dp: AttnDpOpt = None, classes: ClassOpt = None,
    calibration: CalibOpt = None, fmt: FormatOpt = Format.table, out: OutOpt = None,
) -> None:
    """The highest request rate one replica sustains within the latency SLOs, and what binds."""
    from . import api

    result = api.goodput(model, accelerator, input_len=input_len, output_len=output_len,
                         ttft_p99_s=slo_ttft_p99, tpot_p99_s=slo_tpot_p99,
                         ttft_p90_s=slo_ttft_p90, tpot_p90_s=slo_tpot_p90,
                         e2e_p99_s=slo_e2e_p99, count=count, tp=tp, pp=pp, ep=ep,
                         precision=precision, kv_precision=kv_precision, engine=engine,
                         prefill_chunk=prefill_chunk, kv_offload=kv_offload,
                         draft_len=draft_len, acceptance=acceptance, draft_model=draft_model,
                         max_batch=max_batch, arrival=arrival.value, arrival_cv=cv,
                         input_dist=input_dist, output_dist=output_dist, prefix_hit=prefix_hit,
                         attention_dp=attention_dp, classes=classes,
                         calibration=calibration, catalog=load_catalog())
    if fmt == Format.json:
        emit(result.to_json(), out)
        _infeasible_exit(result.infeasible)
        return
    report = result.report
    rows = [["goodput per replica", f"{result.goodput_rps:.3g} req/s"],
            ["binding", result.binding],
            ["capacity per replica", f"{result.capacity_rps:.3g} req/s"]]
    rows += _latency_rows(report["at_goodput"])
    for name, c in report.get("latency_by_class", {}).items():
        rows += [[f"class {name} ({c['share']:.0%} of requests) at the goodput", ""],
                 *_class_rows(c["latency"])]
    _kv_table(rows, f"goodput of {model} on {tp * pp}x {accelerator}", fmt, out)
    _infeasible_exit(result.infeasible)


@app.command()
def sweep(
    model: ModelOpt, accelerator: AccOpt, input_len: InOpt, output_len: OutLenOpt,
    count: CountOpt = None, tp: TpOpt = 1, pp: PpOpt = 1, ep: EpOpt = 1,
    precision: PrecOpt = "bf16", kv_precision: KvPrecOpt = None, engine: EngineOpt = "trtllm",
    prefill_chunk: ChunkOpt = None, max_batch: MaxBatchOpt = None,
    arrival: ArrivalOpt = Arrival.poisson, cv: CvOpt = 1.0, input_dist: InDistOpt = None,
    output_dist: OutDistOpt = None, prefix_hit: PrefixOpt = 0.0,
    calibration: CalibOpt = None, fmt: FormatOpt = Format.table, out: OutOpt = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Also draw latency versus load (FILE.png or FILE.svg).")] = None,
    slo_ttft_p99: Annotated[float | None, typer.Option(
        help="p99 TTFT bound, s, drawn on the --plot chart.")] = None,
    slo_tpot_p99: Annotated[float | None, typer.Option(
        help="p99 TPOT bound, s, drawn on the --plot chart.")] = None,
) -> None:
    """Latency versus load: percentiles at 10% to 95% of one replica's capacity."""
    from .estimate import run_sweep

    if plot is not None:
        from . import plots

        plots.check_target(plot)
    catalog = load_catalog()
    req = _request(model, accelerator, input_len, output_len, count, tp, pp, ep, precision,
                   kv_precision, max_batch, "max_throughput", engine, prefill_chunk, None, 0,
                   0.0, None, None, arrival, cv, input_dist, output_dist, prefix_hit)
    fractions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    report = run_sweep(req, fractions, catalog, _calibration(catalog, calibration))
    if plot is not None:
        from . import plots

        plots.render_latency(plots.latency_curve(report, slo_ttft_p99_s=slo_ttft_p99,
                                                 slo_tpot_p99_s=slo_tpot_p99), plot)
    if fmt == Format.json:
        emit(to_json(report), out)
        return
    headers = ["load", "req/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "e2e p99",
               "batch"]
    body = [[f"{p['load_fraction']:.0%}", f"{p['rate_rps']:.3g}",
             fmt_si(p["ttft_s"]["p50"], "s"), fmt_si(p["ttft_s"]["p99"], "s"),
             fmt_si(p["tpot_s"]["p50"], "s"), fmt_si(p["tpot_s"]["p99"], "s"),
             fmt_si(p["e2e_s"]["p99"], "s"), f"{p['mean_batch']:.1f}"]
            for p in report["points"]]
    _render_table(f"latency vs load (capacity {report['capacity_rps']:.3g} req/s per replica)",
                  headers, body, fmt, out)


class Routing(StrEnum):
    round_robin = "round_robin"
    jsq = "jsq"


@app.command("simulate")
def simulate_cmd(
    model: ModelOpt, accelerator: AccOpt, input_len: InOpt, output_len: OutLenOpt,
    rate: Annotated[float | None, typer.Option(
        help="Requests per second over all replicas.")] = None,
    trace: Annotated[Path | None, typer.Option(
        help="Replay a CSV of arrival_s,input_len,output_len instead of drawing requests.")]
    = None,
    requests: Annotated[int, typer.Option(help="Requests to simulate.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same answer).")] = 0,
    replicas: Annotated[int, typer.Option(help="Replicas behind the router.")] = 1,
    routing: Annotated[Routing, typer.Option(help="How requests are spread over "
                                                  "replicas.")] = Routing.round_robin,
    count: CountOpt = None, tp: TpOpt = 1, pp: PpOpt = 1, ep: EpOpt = 1,
    precision: PrecOpt = "bf16", kv_precision: KvPrecOpt = None, engine: EngineOpt = "trtllm",
    prefill_chunk: ChunkOpt = None, draft_len: DraftOpt = 0, acceptance: AcceptOpt = 0.7,
    max_batch: MaxBatchOpt = None, arrival: ArrivalOpt = Arrival.poisson, cv: CvOpt = 1.0,
    input_dist: InDistOpt = None, output_dist: OutDistOpt = None, classes: ClassOpt = None,
    calibration: CalibOpt = None, fmt: FormatOpt = Format.table, out: OutOpt = None,
) -> None:
    """Discrete-event simulation of continuous batching: full latency distributions, seeded and
    reproducible, beside the analytical answer (per request class with --class)."""
    from dataclasses import replace

    from .estimate import run_simulate
    from .trace import read_trace

    catalog = load_catalog()
    req = replace(_request(model, accelerator, input_len, output_len, count, tp, pp, ep,
                           precision, kv_precision, max_batch, "max_throughput", engine,
                           prefill_chunk, None, draft_len, acceptance, None, rate, arrival, cv,
                           input_dist, output_dist, 0.0), classes=tuple(classes or ()))
    report = run_simulate(req, requests=requests, seed=seed, replicas=replicas,
                          routing=routing.value, catalog=catalog,
                          calibration=_calibration(catalog, calibration),
                          trace=read_trace(trace) if trace is not None else None)
    if fmt == Format.json:
        emit(to_json(report), out)
        return
    headers = ["latency", "source", "mean", "p50", "p90", "p99"]
    body = []
    groups = [("", report["latency"], report["analytic"]["latency"])]
    groups += [(f"{name}: ", c["latency"], c["analytic"])
               for name, c in report.get("latency_by_class", {}).items()]
    for prefix, simulated, analytic in groups:
        for name, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end to end")):
            for source, values in (("simulated", simulated[name]),
                                   ("analytic", analytic[name])):
                body.append([prefix + label, source] + [fmt_si(values[k], "s")
                                                        for k in ("mean", "p50", "p90", "p99")])
    sim = report["simulation"]
    _render_table(f"simulated {sim['requests']} requests over {sim['replicas']} replica(s), "
                  f"{sim['routing']}, seed {sim['seed']}: busy {sim['utilization']:.0%} of the "
                  f"time, mean batch {sim['mean_batch']:.1f}",
                  headers, body, fmt, out)


# ----------------------------------------------------------------------------- validate


@app.command()
def validate(measurements: Annotated[Path, typer.Argument(help="Measurement CSV file.")],
             calibration: CalibOpt = None, fmt: FormatOpt = Format.table,
             out: OutOpt = None) -> None:
    """Predict every row of a measurement file and report the errors."""
    from .measurements import kind_of, read_inference, read_training
    from .validate import summary_rows, validate_inference, validate_training

    catalog = load_catalog()
    calib = _calibration(catalog, calibration)
    if kind_of(measurements) == "training":
        report = validate_training(read_training(measurements), catalog, calib)
    else:
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
    from ..hardware.efficiency import CalibrationSet, Efficiency
    from ..solvers.calibration import fit
    from .measurements import kind_of, read_inference

    catalog = load_catalog()
    if kind_of(measurements) == "training":
        _calibrate_training(measurements, output, _calibration(catalog, calibration),
                            cross_validate)
        return
    base = CalibrationSet(Efficiency(), {}, {}, "physical defaults",
                          catalog.calibration.training) if calibration is None \
        else _calibration(catalog, calibration)
    rows = read_inference(measurements)
    err = console(stderr=True)
    report = fit(rows, catalog, base, progress=err.print)
    mapping = report.calibration.to_mapping()
    mapping["source"] = (f"fleetplan calibrate {measurements.name}: {report.rows_used} rows, "
                         "fitted per accelerator; default = median of the fitted accelerators; "
                         "training fractions kept from the base calibration")
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


# ----------------------------------------------------------------------------- plan


class SchemaKind(StrEnum):
    spec = "spec"
    report = "report"


def _calibrate_training(measurements: Path, output: Path, base: "CalibrationSet",
                        cross_validate: bool) -> None:
    """Fit the three training fractions and write them as a calibration file."""
    from ..solvers.training_calibration import cross_validate_training, fit_training
    from .measurements import read_training
    from .output import atomic_write

    rows = read_training(measurements)
    fit = fit_training(rows, load_catalog(), base)
    mapping = {"training": fit.training.as_dict(),
               "source": f"fleetplan calibrate {measurements.name}: {fit.rows_used} training "
                         "rows, three fractions shared by all accelerators"}
    header = ("# Training fractions fitted by `fleetplan calibrate`; use with --calibration "
              "FILE.\n")
    atomic_write(output, header + yaml.safe_dump(mapping, sort_keys=True))
    err = console(stderr=True)
    err.print(f"median APE {fit.median_ape_before:.1%} -> {fit.median_ape_after:.1%} over "
              f"{fit.rows_used} rows")
    err.print(f"wrote {output} ({fit.seconds:.1f} s)")
    if cross_validate:
        for acc, r in cross_validate_training(rows, load_catalog(), base).items():
            err.print(f"held out {acc:16s} {int(r['rows']):3d} rows: median APE "
                      f"{r['median_ape']:6.1%}, p90 {r['p90_ape']:6.1%}")


def _progress() -> Any:
    """A progress callback that shows a bar on stderr once a search has run for a second (and
    only on a terminal: CI logs get no control characters)."""
    import time

    start = time.perf_counter()
    state: dict[str, Any] = {}

    def tick(what: str, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if "bar" not in state and time.perf_counter() - start > 1.0:
            from rich.progress import Progress

            bar = Progress(console=console(stderr=True), transient=True)
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task("searching", total=total)
        if "bar" in state:
            state["bar"].update(state["task"], completed=done, description=what)
            if done + 1 >= total:
                state["bar"].stop()

    return tick


@app.command()
def plan(spec: Annotated[Path, typer.Argument(help="Plan spec (YAML); see `fleetplan schema "
                                                   "spec`.")],
         fmt: FormatOpt = Format.table, out: OutOpt = None,
         timings: Annotated[bool, typer.Option(help="Put solve times in the report (then it "
                                                    "differs run to run).")] = False,
         fail_if_infeasible: Annotated[bool, typer.Option(
             help="Exit 1 when no plan meets the SLOs (the default; kept for CI scripts that "
                  "say so).")] = True,
         plot: Annotated[Path | None, typer.Option(
             "--plot", help="Also draw each accelerator family's cost-latency Pareto front "
                            "with the chosen candidates (FILE.png or FILE.svg).")] = None,
         ) -> None:
    """Choose accelerators, parallelism, batch limits and routing for workloads under SLOs.
    Exit code 1 when infeasible (the report says what comes closest)."""
    from rich.markup import escape
    from rich.table import Table

    from . import api
    from .report import allocation_rows, summary_lines, workload_rows

    if plot is not None:
        from . import plots

        plots.check_target(plot)
    result = api.plan(spec, timings=timings, catalog=load_catalog(), progress=_progress())
    report = result.report
    if plot is not None:
        from . import plots

        plots.render_pareto(plots.pareto_data(result.to_dict()), plot)
    if fmt == Format.json:
        emit(result.to_json(), out)
    else:
        lines = summary_lines(report)
        a_head, a_rows = allocation_rows(report)
        w_head, w_rows = workload_rows(report)
        if fmt == Format.markdown:
            text = ("### fleetplan plan\n\n" + "\n".join(f"- {x}" for x in lines) + "\n\n"
                    + markdown_table(a_head, a_rows) + "\n" + markdown_table(w_head, w_rows))
            emit(text, out)
        else:
            cap = console()
            with cap.capture() as captured:
                for line in lines:
                    cap.print(line, markup=False)
                for title, head, rows in (("allocations", a_head, a_rows),
                                          ("workloads", w_head, w_rows)):
                    table = Table(title=title)
                    for h in head:
                        table.add_column(h)
                    for r in rows:
                        table.add_row(*(escape(c) for c in r))
                    cap.print(table)
            emit(captured.get(), out)
    _infeasible_exit(fail_if_infeasible and result.infeasible)


@app.command()
def schema(kind: Annotated[SchemaKind, typer.Argument(help="spec or report")],
           out: OutOpt = None) -> None:
    """Print the JSON Schema of a plan spec or of a plan report."""
    from .report import report_schema
    from .spec import spec_schema

    emit(to_json(spec_schema() if kind == SchemaKind.spec else report_schema()), out)


@app.command()
def compare(
        first: Annotated[Path, typer.Argument(help="A plan spec (YAML), or the old report "
                                                   "(JSON).")],
        second: Annotated[Path | None, typer.Argument(help="The new report (JSON).")] = None,
        accelerators: Annotated[str | None, typer.Option(
            help="With a spec: plan with each of these alone and with all of them, "
                 "comma-separated.")] = None,
        fail_on: Annotated[list[str] | None, typer.Option(
            "--fail-on", help="Exit 1 when METRIC grows by more than this: cost:+5%, "
                              "p99_ttft:+10%, accelerators:+2 (old report vs new).")] = None,
        fmt: FormatOpt = Format.table, out: OutOpt = None) -> None:
    """Compare two plan reports (CI gates), or accelerator options for one spec."""
    from .compare import diff, load_report, parse_gate

    gates = [parse_gate(g) for g in fail_on or []]
    if second is not None:
        result = diff(load_report(first), load_report(second), gates)
        if fmt == Format.json:
            emit(to_json(result), out)
        else:
            rows = [[r["metric"], _cell(r["old"]), _cell(r["new"]),
                     "-" if r["change"] is None else f"{r['change']:+.1%}"]
                    for r in result["metrics"]]
            rows += [[f"count {a['accelerator']}", str(a["old"]), str(a["new"]),
                      f"{a['new'] - a['old']:+d}"] for a in result["accelerators"]]
            rows += [[f"gate {g}", "", "", "FAILED" if g in result["failed"] else "ok"]
                     for g in result["gates"]]
            _render_table(f"{first} -> {second}", ["metric", "old", "new", "change"], rows,
                          fmt, out)
        _infeasible_exit(bool(result["failed"]))
        return
    if gates:
        raise SpecError("--fail-on compares two reports: give OLD.json NEW.json",
                        field="fail-on")
    if accelerators is None:
        raise SpecError("give a second report to compare with, or --accelerators to compare "
                        "options for this spec", field="accelerators")
    from . import api

    names = [a.strip() for a in accelerators.split(",") if a.strip()]
    results = api.compare_options(first, names, catalog=load_catalog(), progress=_progress())
    if fmt == Format.json:
        emit(to_json({"options": results}), out)
        return
    rows = [[r["pool"], r["status"], _cell(r["cost_usd_h"]),
             _cell(r["cost_usd_per_million_output_tokens"]), str(r["accelerators"]),
             _cell(r["p99_ttft_s"]), _cell(r["p99_tpot_s"]), "; ".join(r["allocations"])]
            for r in results]
    _render_table(f"options for {first}", ["pool", "status", "USD/h", "USD/M out tok",
                                           "accelerators", "p99 TTFT s", "p99 TPOT s",
                                           "plan"], rows, fmt, out)


@app.command()
def bench(examples: Annotated[list[Path] | None, typer.Argument(
              help="Specs to time end to end (default: none).")] = None,
          repeats: Annotated[int, typer.Option(min=1, help="Best of this many runs.")] = 3,
          fresh_process: Annotated[bool, typer.Option(
              "--fresh-process", help="Also time `fleetplan plan` on each example in new "
                                      "processes (interpreter start and imports included; "
                                      "median and best of --repeats runs).")] = False,
          fmt: FormatOpt = Format.table, out: OutOpt = None) -> None:
    """Measure the speed figures the README quotes: grid screening rate, exact goodput rate,
    mix ILP solve time and example plans end to end, on this machine."""
    from .bench import run_bench

    result = run_bench(load_catalog(), list(examples or []), repeats, fresh_process)
    if fmt == Format.json:
        emit(to_json(result), out)
        return
    g, s, m = result["grid_screen"], result["search_with_exact_goodput"], result["mix_ilp"]
    rows = [["grid screen", f"{g['candidate_bucket_pairs']} candidate-bucket pairs "
             f"({g['replica_bucket_pairs']} replica-bucket evaluations)",
             f"{g['seconds'] * 1e3:.1f} ms", f"{g['pairs_per_s']:,.0f} pairs/s "
             f"({g['evaluated_pairs_per_s']:,.0f} evaluations/s)"],
            ["search with exact goodput", f"{s['pairs_with_exact_goodput']} exact pairs",
             f"{s['seconds'] * 1e3:.0f} ms", f"{s['exact_pairs_per_s']:,.1f} pairs/s"],
            ["mix ILP", f"{m['types']} types x {m['buckets']} buckets ({m['candidates']} "
             f"candidates), {m['status']}", f"{m['seconds'] * 1e3:.0f} ms", ""],
            ["training layout grid", f"{result['training_grid']['layouts']} layouts",
             f"{result['training_grid']['seconds'] * 1e3:.0f} ms",
             f"{result['training_grid']['layouts_per_s']:,.0f} layouts/s"]]
    rows += [[f"plan {name}", "end to end (in process)", f"{sec * 1e3:.0f} ms", ""]
             for name, sec in result["example_plans_seconds"].items()]
    rows += [[f"plan {name}", f"fresh process, median of {repeats} (best)",
              f"{sec['median'] * 1e3:.0f} ms ({sec['best'] * 1e3:.0f} ms)", ""]
             for name, sec in result.get("example_plans_fresh_process_seconds", {}).items()]
    _render_table("fleetplan bench", ["what", "size", "time", "rate"], rows, fmt, out)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def main() -> None:
    """Console entry point: usage errors exit 2 with the parser's message; every library error
    (bad input file, unknown id, invalid value) is one line on stderr and exit code 2."""
    try:
        app()
    except SpecError as err:
        _fail(str(err))
    except BrokenPipeError:
        sys.exit(0)
    except OSError as err:  # an --out path that cannot be written, a full disk
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"{where}{err.strerror or err}")
