"""Spreadsheet functions: fleetplan in Excel cells through xlwings.

`FLEETPLAN_ESTIMATE`, `FLEETPLAN_GOODPUT`, `FLEETPLAN_PLAN` and `FLEETPLAN_CATALOG` each
return a 2-D list, a header row then data rows, which Excel spills into the cells below and to
the right. Numbers are in SI units (seconds, requests/s, bytes, USD/h) and each table says
which. Any error, bad input, an unknown id or an infeasible plan, comes back as one cell that
reads ``fleetplan error: ...``: a worksheet shows the reason instead of ``#VALUE!``.

This is the only module that imports xlwings (the `excel` extra). Without it the functions
are plain Python functions, which is how the tests call them.
"""

from __future__ import annotations

import functools
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel

from ..hardware.catalog import CATALOG_SECTIONS, load_catalog
from ..hardware.errors import SpecError
from . import api, describe
from .files import is_model_file
from .output import parallelism_label
from .spec import LoadedSpec, Spec

try:
    import xlwings as xw
except ImportError:  # the excel extra is not installed: the functions stay plain Python
    xw = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])
Table = list[list[Any]]

ERROR_PREFIX = "fleetplan error: "
RANGE_SOURCE = "spec range"
"""What errors call a spec given as a key/value range."""
PLAN_VIEWS = ("summary", "allocations", "workloads")
PLAN_CACHE_SIZE = 8
"""Plans kept per Python process: the three views of one spec (three cells) solve it once."""


# ----------------------------------------------------------------------------- registration


def _identity(f: F) -> F:
    return f


def _func(**options: Any) -> Callable[[F], F]:
    """xlwings' `@func` (registers an Excel function) where xlwings is installed."""
    if xw is None:
        return _identity
    decorator: Callable[[F], F] = xw.func(**options)
    return decorator


def _arg(name: str, **options: Any) -> Callable[[F], F]:
    """xlwings' `@arg` (how a cell argument is read) where xlwings is installed."""
    if xw is None:
        return _identity
    decorator: Callable[[F], F] = xw.arg(name, **options)
    return decorator


def _cells(f: F) -> F:
    """Every exception becomes a one-cell table with its message: Excel would otherwise show
    an opaque #VALUE! (classic add-in) or an error dialog."""

    @functools.wraps(f)
    def guarded(*args: Any, **kwargs: Any) -> Table:
        try:
            table: Table = f(*args, **kwargs)
        except SpecError as err:
            return [[ERROR_PREFIX + str(err)]]
        except Exception as err:  # a bug must still reach the user as text, not a crash
            return [[f"{ERROR_PREFIX}{type(err).__name__}: {err}"]]
        return table

    return cast(F, guarded)


# ----------------------------------------------------------------------------- cell values


def _scalar(value: Any, name: str) -> Any:
    """One cell's value: a 1x1 range arrives as [[v]] in some hosts; blanks are None."""
    while isinstance(value, list | tuple):
        if len(value) != 1:
            raise SpecError("expected one cell, got a range", field=name)
        value = value[0]
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _int(value: Any, name: str) -> int | None:
    """A whole number from a cell: 8.0 and "8" are 8; a fraction is an error."""
    value = _scalar(value, name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SpecError(f"expected a whole number, got {value!r}", field=name) from None
    if isinstance(value, int | float) and not isinstance(value, bool) and \
            math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise SpecError(f"expected a whole number, got {value!r}", field=name)


def _float(value: Any, name: str) -> float | None:
    value = _scalar(value, name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise SpecError(f"expected a number, got {value!r}", field=name) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise SpecError(f"expected a number, got {value!r}", field=name)


def _text(value: Any, name: str) -> str | None:
    value = _scalar(value, name)
    if value is None or isinstance(value, str):
        return value
    raise SpecError(f"expected text, got {value!r}", field=name)


def _required(value: Any, name: str) -> Any:
    if value is None:
        raise SpecError("is required", field=name)
    return value


def _given(**values: Any) -> dict[str, Any]:
    """Keyword arguments that were given: a blank cell leaves the API's default."""
    return {k: v for k, v in values.items() if v is not None}


def _at(data: Any, path: str) -> Any:
    """The value at a dotted path (list items by index) of a JSON-ready report; None where
    it has none."""
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


def _metric_rows(report: dict[str, Any], rows: Sequence[tuple[str, str]]) -> Table:
    return [[path, _at(report, path), unit] for path, unit in rows]


# ----------------------------------------------------------------------------- estimate


ESTIMATE_ROWS = (
    ("feasible", ""), ("inputs.count", "accelerators"), ("ttft_s", "s"), ("tpot_s", "s"),
    ("output_tok_s_total", "tokens/s"), ("output_tok_s_per_accelerator", "tokens/s"),
    ("batch", "sequences"), ("batch_limit", ""), ("energy_j_per_token", "J/token"),
    ("bound.prefill", ""), ("bound.decode", ""), ("memory.weights_bytes", "bytes"),
    ("memory.kv_cache_capacity_bytes", "bytes"), ("memory.kv_capacity_tokens", "tokens"),
)
LOAD_ROWS = (
    ("capacity_rps", "requests/s"), ("stable", ""), ("utilization", "fraction"),
    ("mean_batch", "sequences"), ("latency.ttft_s.p50", "s"), ("latency.ttft_s.p99", "s"),
    ("latency.tpot_s.p50", "s"), ("latency.tpot_s.p99", "s"), ("latency.e2e_s.p50", "s"),
    ("latency.e2e_s.p99", "s"),
)
HEADER = ["metric", "value", "unit"]


@_func(category="fleetplan")
@_arg("model", doc="Catalog model id, e.g. llama-3.1-8b")
@_arg("accelerator", doc="Catalog accelerator id, e.g. h100-sxm")
@_arg("input_len", doc="Prompt tokens per request")
@_arg("output_len", doc="Generated tokens per request")
@_arg("batch", doc="Requests in the batch (leave blank with a rate)")
@_arg("rate_rps", doc="Offered load, requests/s: adds latency percentiles")
@_arg("tp", doc="Tensor-parallel degree (default 1)")
@_arg("pp", doc="Pipeline-parallel degree (default 1)")
@_arg("precision", doc="bf16 (default), fp8, int8, int4, ...")
@_arg("engine", doc="trtllm (default), vllm, sglang, eager")
@_arg("scenario", doc="static (default) or max_throughput")
@_cells
def FLEETPLAN_ESTIMATE(model: Any, accelerator: Any, input_len: Any, output_len: Any,
                       batch: Any = None, rate_rps: Any = None, tp: Any = None, pp: Any = None,
                       precision: Any = None, engine: Any = None,
                       scenario: Any = None) -> list[list[Any]]:
    """Latency (s), throughput (tokens/s), memory (bytes) and energy (J/token) of one
    serving configuration; with a rate (requests/s), latency percentiles under that load."""
    result = api.estimate(
        _required(_text(model, "model"), "model"),
        _required(_text(accelerator, "accelerator"), "accelerator"),
        input_len=_required(_int(input_len, "input_len"), "input_len"),
        output_len=_required(_int(output_len, "output_len"), "output_len"),
        **_given(batch=_int(batch, "batch"), rate_rps=_float(rate_rps, "rate_rps"),
                 tp=_int(tp, "tp"), pp=_int(pp, "pp"), precision=_text(precision, "precision"),
                 engine=_text(engine, "engine"), scenario=_text(scenario, "scenario")))
    report = result.to_dict()
    rows = _metric_rows(report, ESTIMATE_ROWS)
    if "latency" in report:
        rows += _metric_rows(report, LOAD_ROWS)
    rows += [["warning", w, ""] for w in report["warnings"]]
    return [HEADER, *rows]


# ----------------------------------------------------------------------------- goodput


GOODPUT_ROWS = (
    ("goodput_rps", "requests/s"), ("binding", ""), ("capacity_rps", "requests/s"),
    ("at_goodput.latency.ttft_s.p99", "s"), ("at_goodput.latency.tpot_s.p99", "s"),
    ("at_goodput.latency.e2e_s.p99", "s"), ("at_goodput.utilization", "fraction"),
    ("at_goodput.mean_batch", "sequences"),
)


@_func(category="fleetplan")
@_arg("model", doc="Catalog model id, e.g. llama-3.1-70b")
@_arg("accelerator", doc="Catalog accelerator id, e.g. h100-sxm")
@_arg("input_len", doc="Prompt tokens per request")
@_arg("output_len", doc="Generated tokens per request")
@_arg("ttft_p99_s", doc="p99 time-to-first-token objective, s")
@_arg("tpot_p99_s", doc="p99 time-per-output-token objective, s")
@_arg("e2e_p99_s", doc="p99 end-to-end latency objective, s")
@_arg("tp", doc="Tensor-parallel degree (default 1)")
@_arg("pp", doc="Pipeline-parallel degree (default 1)")
@_arg("precision", doc="bf16 (default), fp8, int8, int4, ...")
@_arg("engine", doc="trtllm (default), vllm, sglang, eager")
@_arg("max_batch", doc="Cap on running sequences (default: the engine's)")
@_cells
def FLEETPLAN_GOODPUT(model: Any, accelerator: Any, input_len: Any, output_len: Any,
                      ttft_p99_s: Any = None, tpot_p99_s: Any = None, e2e_p99_s: Any = None,
                      tp: Any = None, pp: Any = None, precision: Any = None,
                      engine: Any = None, max_batch: Any = None) -> list[list[Any]]:
    """The highest request rate (requests/s) one replica sustains within p99 latency
    objectives (s), what binds there, and the latencies at that rate."""
    result = api.goodput(
        _required(_text(model, "model"), "model"),
        _required(_text(accelerator, "accelerator"), "accelerator"),
        input_len=_required(_int(input_len, "input_len"), "input_len"),
        output_len=_required(_int(output_len, "output_len"), "output_len"),
        **_given(ttft_p99_s=_float(ttft_p99_s, "ttft_p99_s"),
                 tpot_p99_s=_float(tpot_p99_s, "tpot_p99_s"),
                 e2e_p99_s=_float(e2e_p99_s, "e2e_p99_s"), tp=_int(tp, "tp"),
                 pp=_int(pp, "pp"), precision=_text(precision, "precision"),
                 engine=_text(engine, "engine"), max_batch=_int(max_batch, "max_batch")))
    report = result.to_dict()
    rows = _metric_rows(report, GOODPUT_ROWS)
    rows += [[f"slo.{name}", bound, "s"] for name, bound in sorted(report["slo"].items())]
    return [HEADER, *rows]


# ----------------------------------------------------------------------------- plan


def _unwrap(annotation: Any) -> Any:
    """The type a key walks into: Optional and Annotated removed; of a union, the list or
    model member (a length is `int | LengthDist`: `input_len.mean` goes into the model)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [_unwrap(a) for a in get_args(annotation) if a is not type(None)]
        for member in members:
            if get_origin(member) is list or _is_model(member):
                return member
        return members[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_scalar_list(parts: Sequence[str]) -> bool:
    """Whether the spec field at this key path is a list of numbers or strings (such as
    `options.tp`), which a cell may give as one value or as "1, 2, 4"."""
    annotation: Any = Spec
    for part in parts:
        annotation = _unwrap(annotation)
        if get_origin(annotation) is list and part.isdigit():
            annotation = get_args(annotation)[0]
        elif _is_model(annotation) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        else:
            return False
    annotation = _unwrap(annotation)
    return get_origin(annotation) is list and not _is_model(_unwrap(get_args(annotation)[0]))


def _plain(value: Any) -> Any:
    """A cell value as YAML would give it: 40.0 -> 40 (JSON and pydantic take either for a
    float field; an int field wants the int); "1e3" stays text unless a list splits it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _piece(text: str) -> Any:
    """One item of a comma-separated list: a number where it reads as one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _nest(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Dotted keys to nested data: `workloads.0.slo.ttft_p99_s` -> workloads[0].slo...;
    numeric parts are list indexes, from 0, without gaps."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.split(".")
        if any(not p for p in parts):
            raise SpecError(f"a key is names separated by dots, got {key!r}", field=key)
        node = root
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise SpecError(f"{'.'.join(parts[:depth + 1])!r} has a value, so it has no "
                                f"{parts[depth + 1]!r}", field=key)
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise SpecError("has keys below it, so it takes no value of its own", field=key)
        if parts[-1] in node:
            raise SpecError("is given twice", field=key)
        item = _plain(value)
        if _is_scalar_list(parts) and isinstance(item, str):
            item = [_piece(p.strip()) for p in item.split(",") if p.strip()]
        elif _is_scalar_list(parts) and item is not None:
            item = [item]
        node[parts[-1]] = item
    listed: dict[str, Any] = _lists(root, "")
    return listed


def _lists(node: Any, where: str) -> Any:
    """Mappings whose keys are all indexes become lists (0, 1, 2, ... with none missing)."""
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v, f"{where}{k}.") for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        indexes = sorted(int(k) for k in items)
        if indexes != list(range(len(indexes))):
            missing = next(i for i in range(len(indexes) + 1) if i not in indexes)
            raise SpecError("is missing (items count from 0, without gaps)",
                            field=f"{where}{missing}")
        return [items[str(i)] for i in indexes]
    return items


def _rows(value: Any) -> list[list[Any]]:
    """A range as rows: a single value is one row of one cell, a list one row."""
    if not isinstance(value, list | tuple):
        return [[value]]
    if all(not isinstance(v, list | tuple) for v in value):
        return [list(value)]
    return [list(r) if isinstance(r, list | tuple) else [r] for r in value]


def _spec_of(spec: Any) -> str | dict[str, Any]:
    """A spec path (one cell), or the spec a key/value range describes."""
    rows = _rows(spec)
    if len(rows) == 1 and len(rows[0]) == 1:
        path = _text(rows[0][0], "spec")
        if path is None:
            raise SpecError("give a spec file path or a key/value range", field="spec")
        return path
    pairs: list[tuple[str, Any]] = []
    for k, row in enumerate(rows):
        key = _scalar(row[0], "spec") if row else None
        if key is None:
            continue  # blank lines keep a sheet readable
        if not isinstance(key, str):
            raise SpecError(f"row {k + 1}: a key is text such as workloads.0.model, got "
                            f"{key!r}", field="spec")
        if k == 0 and key.lower() == "key":
            continue  # a header row
        if len(row) < 2:
            raise SpecError(f"row {k + 1}: a key/value range has two columns", field="spec")
        pairs.append((key, _scalar(row[1], key)))
    if not pairs:
        raise SpecError("the key/value range is empty", field="spec")
    return _nest(pairs)


Stamp = tuple[str, int, int]
"""A file as the plan cache keys it: resolved path, mtime (ns) and size (-1 when missing)."""


def _stamp(path: Path) -> Stamp:
    try:
        stat = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _inputs(loaded: LoadedSpec) -> tuple[Stamp, ...]:
    """The files a spec reads besides itself (its calibration file, model config files), so
    that editing one of them solves the plan again."""
    catalog = load_catalog()
    names = [w.model for w in loaded.spec.workloads
             if w.model is not None and is_model_file(catalog, w.model)]
    if loaded.spec.options.calibration is not None:
        names.append(loaded.spec.options.calibration)
    return tuple(_stamp(loaded.folder / name) for name in sorted(set(names)))


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan_file(spec: Stamp, inputs: tuple[Stamp, ...],
               accelerators: tuple[str, ...] | None) -> api.PlanResult:
    """The plan of a spec file, solved again when it or a file it reads changes."""
    return api.plan(spec[0], accelerators=accelerators)


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan_mapping(text: str, inputs: tuple[Stamp, ...],
                  accelerators: tuple[str, ...] | None) -> api.PlanResult:
    return api.plan(api.load_spec(json.loads(text), source=RANGE_SOURCE),
                    accelerators=accelerators)


def plan_result(spec: Any, accelerators: Any = None) -> api.PlanResult:
    """The plan of a spec path or key/value range (as `FLEETPLAN_PLAN` reads them); raises
    SpecError. Results are kept for the spec's content, so views of one spec solve once."""
    given = _spec_of(spec)
    text = _text(accelerators, "accelerators")
    pool = None if text is None else tuple(a.strip() for a in text.split(",") if a.strip())
    if isinstance(given, str):
        try:
            Path(given).stat()
        except OSError as err:
            raise SpecError(f"cannot read: {err.strerror}", file=given) from None
        # The spec is read (and validated) each call to find the files it names; the plan,
        # the slow part, is solved once per state of all of them.
        return _plan_file(_stamp(Path(given)), _inputs(api.load_spec(given)), pool)
    text = json.dumps(given, sort_keys=True)
    return _plan_mapping(text, _inputs(api.load_spec(given, source=RANGE_SOURCE)), pool)


ALLOCATION_HEADER = ["accelerator", "count", "replicas", "tp", "pp", "ep", "attention_dp",
                     "precision", "max_batch", "prefill_chunk", "cost_usd_h", "load_fraction",
                     "pools"]
"""tp, pp and ep of a disaggregated allocation are its decode replicas'; "pools" then says
its units and each pool's replicas and parallelism ("1x(3P tp2pp4 + 1D tp8pp1)"), and is
empty for co-located replicas."""
WORKLOAD_HEADER = ["workload", "model", "rate_rps", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s",
                   "slo_ratio", "served_fraction"]
SUMMARY_ROWS = (
    ("status", ""), ("objective", ""), ("cost_usd_h", "USD/h"),
    ("cost_usd_per_million_output_tokens", "USD/million output tokens"),
    ("accelerators", "accelerators"), ("power_w", "W"), ("solver.gap", "fraction"),
)


def _plan_table(result: api.PlanResult, view: str) -> Table:
    report = result.to_dict()
    if view == "summary":
        rows = _metric_rows(report, SUMMARY_ROWS)
        rows += [["warning", w, ""] for w in report["warnings"]]
        return [HEADER, *rows]
    if view == "allocations":
        body = [[a[k] for k in ALLOCATION_HEADER[:-1]]
                + [parallelism_label(a) if a.get("disaggregated") else None]
                for a in report["allocations"]]
        total = ["total", report["accelerators"], sum(a["replicas"] for a in
                                                      report["allocations"])]
        total += [None] * 7 + [report["cost_usd_h"], None, None]
        return [ALLOCATION_HEADER, *body, total]
    body = []
    for w in report["workloads"]:
        p = w["predicted"] or {}
        body.append([w["name"], w["model"], w["rate_rps"], p.get("ttft_p99_s"),
                     p.get("tpot_p99_s"), p.get("e2e_p99_s"), p.get("slo_ratio"),
                     w["served_fraction"]])
    return [WORKLOAD_HEADER, *body]


def _infeasible_message(result: api.PlanResult) -> str:
    closest = result.report.closest
    text = "infeasible: no plan meets every SLO with this pool"
    if closest is not None:
        text += f"; the closest serves {closest.served_fraction:.1%} of the demand"
        if closest.reasons:
            text += ": " + "; ".join(closest.reasons)
    return text


@_func(category="fleetplan")
@_arg("spec", ndim=2, doc="A spec file path, or a 2-column range of keys "
                          "(workloads.0.model, pool.0.accelerator, ...) and values")
@_arg("view", doc="summary (default), allocations or workloads")
@_arg("accelerators", doc="Plan with only these accelerator ids, comma-separated")
@_cells
def FLEETPLAN_PLAN(spec: Any, view: Any = None, accelerators: Any = None) -> list[list[Any]]:
    """The cheapest fleet that meets the spec's latency SLOs: a summary (USD/h, USD per
    million output tokens, accelerators, W), the allocations, or per-workload latencies (s)."""
    chosen = _text(view, "view") or "summary"
    if chosen not in PLAN_VIEWS:
        raise SpecError(f"one of {', '.join(PLAN_VIEWS)}, got {chosen!r}", field="view")
    result = plan_result(spec, accelerators)
    if result.infeasible:
        raise SpecError(_infeasible_message(result))
    return _plan_table(result, chosen)


# ----------------------------------------------------------------------------- catalog


CATALOG_COLUMNS: dict[str, tuple[str, ...]] = {
    "accelerators": ("id", "name", "vendor", "kind", "peak_flops_dense.bf16",
                     "peak_flops_dense.fp8", "memory.0.capacity_bytes",
                     "memory.0.bandwidth_bytes_s", "scale_up.bandwidth_per_direction_bytes_s",
                     "tdp_w", "price.usd_per_hour"),
    "models": ("id", "name", "model_type", "params", "active_params", "layers", "hidden",
               "vocab", "attention.kind", "attention.heads", "attention.kv_heads",
               "moe.experts", "moe.top_k", "max_context"),
    "interconnects": ("id", "name", "scope", "bandwidth_per_direction_bytes_s", "latency_s"),
    "memory": ("id", "name", "kind", "capacity_bytes", "bandwidth_bytes_s", "latency_s"),
    "engines": ("id", "name", "max_batch", "max_tokens_per_step", "kv_memory_fraction",
                "graphs", "kernel_launch_s", "step_overhead_s", "chunked_prefill"),
}
"""Columns per section: paths into `fleetplan catalog show ID --format json`, whose names
carry the unit (FLOP/s for peak_flops_dense, bytes, bytes/s, s, W, USD/h)."""


@_func(category="fleetplan")
@_arg("section", doc="accelerators (default), models, interconnects, memory or engines")
@_cells
def FLEETPLAN_CATALOG(section: Any = None) -> list[list[Any]]:
    """One catalog section as a table, one row per entry, in SI units (FLOP/s, bytes,
    bytes/s, s, W, USD/h)."""
    name = _text(section, "section") or "accelerators"
    columns = CATALOG_COLUMNS.get(name)
    if columns is None or name not in CATALOG_SECTIONS:
        raise SpecError(f"one of {', '.join(CATALOG_COLUMNS)}, got {name!r}", field="section")
    entries = describe.section(load_catalog(), name)
    return [list(columns), *[[_at(e, c) for c in columns] for e in entries]]
