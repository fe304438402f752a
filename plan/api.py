"""The public Python API: `estimate`, `goodput`, `plan`, `train_estimate` and `load_spec`.

Each function returns a typed, immutable result whose `to_json()` is byte for byte what the CLI
prints with `--format json` for the same inputs (`to_dict()` is the same data as Python
objects); the CLI's `estimate`, `goodput` and `plan` commands are thin layers over these
functions. Units are SI throughout: seconds, requests/s, bytes, joules, watts, USD/h.

Bad input (an unknown id, an invalid value, a spec that does not validate) raises
`fleetplan.hardware.errors.SpecError`, which names the file, line and field where it knows
them. An infeasible answer is a result (`infeasible` is true), not an exception.

"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..hardware.catalog import Catalog, load_catalog
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..hardware.yamlio import LineDict
from ..models.queueing import Slo
from .estimate import (
    EstimateRequest,
    request_classes,
    run_estimate,
    run_goodput,
    trace_request,
)
from .files import load_calibration
from .output import clean, to_json
from .spec import LoadedSpec, parse_spec
from .spec import load_spec as _load_spec_file
from .trace import read_trace

if TYPE_CHECKING:
    from .report import Allocation, Report

__all__ = ["EstimateResult", "GoodputResult", "LoadedSpec", "PlanResult", "compare_options",
           "estimate", "goodput", "load_spec", "plan"]

SCENARIOS = ("static", "max_throughput")
MAPPING_SOURCE = "<mapping>"
"""What errors call a spec given as a mapping (no file, no lines); relative paths in it are
relative to the working directory."""

Progress = Callable[[str, int, int], None]


# ----------------------------------------------------------------------------- results


class _ReportBacked:
    """`to_dict` and `to_json` of a result that keeps its report as a mapping."""

    report: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (a fresh copy; NaN and inf become None)."""
        data: dict[str, Any] = clean(dict(self.report))
        return data

    def to_json(self) -> str:
        """The report as the matching CLI command prints it with `--format json`."""
        return to_json(dict(self.report))


@dataclass(frozen=True)
class EstimateResult(_ReportBacked):
    """One configuration's prediction: the headline figures, typed, and the whole report.

    Attributes
    ----------
    feasible : bool
        Weights, workspace and the KV cache of the batch fit in device memory.
    ttft_s, tpot_s : float
        Time to first token and time per output token, seconds (static or max-throughput
        scenario; percentiles under load are in ``report["latency"]`` when a rate was given).
    output_tok_s_total, output_tok_s_per_accelerator : float
        Output tokens/s of the replica and per accelerator.
    energy_j_per_token : float
        Joules per output token.
    stable : bool or None
        With a rate: whether the replica keeps up with it; None without a rate.
    capacity_rps : float or None
        With a rate: the replica's capacity, requests/s; None without a rate.
    warnings : tuple of str
    request : EstimateRequest
        What was evaluated, after a trace set the load.
    report : Mapping
        The report as built (read-only; floats may be NaN or inf, which JSON writes as null).
    """

    feasible: bool
    ttft_s: float
    tpot_s: float
    output_tok_s_total: float
    output_tok_s_per_accelerator: float
    energy_j_per_token: float
    stable: bool | None
    capacity_rps: float | None
    warnings: tuple[str, ...]
    request: EstimateRequest = field(repr=False)
    report: Mapping[str, Any] = field(repr=False, hash=False)

    @classmethod
    def of(cls, request: EstimateRequest, report: dict[str, Any]) -> EstimateResult:
        """The result of `run_estimate(request, ...)`."""
        stable = report.get("stable")
        capacity = report.get("capacity_rps")
        return cls(feasible=bool(report["feasible"]), ttft_s=float(report["ttft_s"]),
                   tpot_s=float(report["tpot_s"]),
                   output_tok_s_total=float(report["output_tok_s_total"]),
                   output_tok_s_per_accelerator=float(report["output_tok_s_per_accelerator"]),
                   energy_j_per_token=float(report["energy_j_per_token"]),
                   stable=None if stable is None else bool(stable),
                   capacity_rps=None if capacity is None else float(capacity),
                   warnings=tuple(report["warnings"]), request=request,
                   report=MappingProxyType(report))

    @property
    def infeasible(self) -> bool:
        """It does not fit, or it cannot keep up with the rate (the CLI exits 1)."""
        return not self.feasible or self.stable is False


@dataclass(frozen=True)
class GoodputResult(_ReportBacked):
    """The highest request rate one replica sustains within the SLOs.

    Attributes
    ----------
    goodput_rps : float
        Requests/s per replica at which the tightest objective is just met (0 when none is).
    binding : str
        The objective that binds there, e.g. ``"ttft_p99"``.
    capacity_rps : float
        The replica's throughput limit, requests/s, regardless of latency.
    slo : Mapping of str to float
        The objectives, seconds, by name (``ttft_p99_s``, ...).
    request : EstimateRequest
        The replica and load that were evaluated.
    report : Mapping
        The report as built (read-only).
    """

    goodput_rps: float
    binding: str
    capacity_rps: float
    slo: Mapping[str, float] = field(hash=False)
    request: EstimateRequest = field(repr=False)
    report: Mapping[str, Any] = field(repr=False, hash=False)

    @classmethod
    def of(cls, request: EstimateRequest, report: dict[str, Any]) -> GoodputResult:
        """The result of `run_goodput(request, ...)`."""
        return cls(goodput_rps=float(report["goodput_rps"]), binding=str(report["binding"]),
                   capacity_rps=float(report["capacity_rps"]),
                   slo=MappingProxyType(dict(report["slo"])), request=request,
                   report=MappingProxyType(report))

    @property
    def infeasible(self) -> bool:
        """No rate meets the objectives (the CLI exits 1)."""
        return self.goodput_rps <= 0


@dataclass(frozen=True)
class PlanResult:
    """A fleet plan: the typed report (`fleetplan schema report` is its JSON Schema).

    Attributes
    ----------
    report : fleetplan.plan.report.Report
        Status, allocations, nodes, per-workload predictions, solver facts, the search and
        the assumptions; treat it as read-only.
    """

    report: Report = field(hash=False)

    @property
    def status(self) -> str:
        """``optimal``, ``feasible`` (stopped at the time limit) or ``infeasible``."""
        return self.report.status

    @property
    def infeasible(self) -> bool:
        """No plan meets every SLO within the pool (the CLI exits 1)."""
        return self.report.status == "infeasible"

    @property
    def cost_usd_h(self) -> float | None:
        """USD per hour of the whole fleet; None where a type in use has no price."""
        return self.report.cost_usd_h

    @property
    def cost_usd_per_million_output_tokens(self) -> float | None:
        """USD per million output tokens at the planned rates."""
        return self.report.cost_usd_per_million_output_tokens

    @property
    def accelerators(self) -> int:
        """Accelerators in the fleet."""
        return self.report.accelerators

    @property
    def power_w(self) -> float | None:
        """Power of the fleet at the planned load, watts (None with measured capacities)."""
        return self.report.power_w

    @property
    def allocations(self) -> list[Allocation]:
        """What to run: accelerator, count, replicas, parallelism, precision, routes."""
        return list(self.report.allocations)

    @property
    def warnings(self) -> list[str]:
        return list(self.report.warnings)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report (a fresh copy)."""
        return self.report.model_dump(mode="json")

    def to_json(self) -> str:
        """The report as `fleetplan plan SPEC --format json` prints it."""
        return to_json(self.to_dict())


# ----------------------------------------------------------------------------- inputs


def _whole(value: Any, name: str) -> int:
    """An integer argument; a float with no fraction (1.0, as spreadsheets send) is one too."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SpecError(f"expected a whole number, got {value!r}", field=name)


def _whole_or_none(value: Any, name: str) -> int | None:
    return None if value is None else _whole(value, name)


def _real(value: Any, name: str) -> float:
    """A float argument (ints widen, so that the JSON says 8.0 as the CLI does)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise SpecError(f"expected a number, got {value!r}", field=name)


def _real_or_none(value: Any, name: str) -> float | None:
    return None if value is None else _real(value, name)


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    raise SpecError(f"expected a string, got {value!r}", field=name)


def _text_or_none(value: Any, name: str) -> str | None:
    return None if value is None else _text(value, name)


def _calibration(catalog: Catalog, given: str | Path | CalibrationSet | None) \
        -> CalibrationSet:
    if given is None:
        return catalog.calibration
    if isinstance(given, CalibrationSet):
        return given
    return load_calibration(catalog, Path(given))


def _request(model: Any, accelerator: Any, input_len: Any, output_len: Any, count: Any,
             tp: Any, pp: Any, ep: Any, precision: Any, kv_precision: Any, batch: Any,
             scenario: Any, engine: Any, prefill_chunk: Any, kv_offload: Any, draft_len: Any,
             acceptance: Any, draft_model: Any, rate_rps: Any, arrival: Any, arrival_cv: Any,
             input_dist: Any, output_dist: Any, prefix_hit: Any,
             disaggregate: Any, attention_dp: Any = None,
             classes: Any = None, prefill: tuple[Any, Any, Any] = (None, None, None),
             kv_link: Any = "scale-out") -> EstimateRequest:
    """Arguments checked for type and normalised (ints as ints, floats as floats), so that
    the report is the CLI's whatever numeric types the caller used."""
    if scenario not in SCENARIOS:
        raise SpecError(f"must be one of {', '.join(SCENARIOS)}, got {scenario!r}",
                        field="scenario")
    return EstimateRequest(
        model=_text(model, "model"), accelerator=_text(accelerator, "accelerator"),
        input_len=_whole(input_len, "input_len"), output_len=_whole(output_len, "output_len"),
        count=_whole_or_none(count, "count"), tp=_whole(tp, "tp"), pp=_whole(pp, "pp"),
        ep=_whole(ep, "ep"), precision=_text(precision, "precision"),
        kv_precision=_text_or_none(kv_precision, "kv_precision"),
        batch=_whole_or_none(batch, "batch"), scenario=scenario,
        engine=_text(engine, "engine"),
        prefill_chunk=_whole_or_none(prefill_chunk, "prefill_chunk"),
        kv_offload=_text_or_none(kv_offload, "kv_offload"),
        draft_len=_whole(draft_len, "draft_len"), acceptance=_real(acceptance, "acceptance"),
        draft_model=_text_or_none(draft_model, "draft_model"),
        rate_rps=_real_or_none(rate_rps, "rate_rps"), arrival=_text(arrival, "arrival"),
        arrival_cv=_real(arrival_cv, "arrival_cv"),
        input_dist=_text_or_none(input_dist, "input_dist"),
        output_dist=_text_or_none(output_dist, "output_dist"),
        prefix_hit=_real(prefix_hit, "prefix_hit"),
        disaggregate=_text_or_none(disaggregate, "disaggregate"),
        attention_dp=_whole_or_none(attention_dp, "attention_dp"),
        classes=_texts(classes, "classes"),
        prefill_tp=_whole_or_none(prefill[0], "prefill_tp"),
        prefill_pp=_whole_or_none(prefill[1], "prefill_pp"),
        prefill_ep=_whole_or_none(prefill[2], "prefill_ep"), kv_link=_text(kv_link, "kv_link"))


def _texts(value: Any, name: str) -> tuple[str, ...]:
    """None, one string or a sequence of strings, as a tuple of strings."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise SpecError(f"must be a string or a list of strings, got {value!r}", field=name)
    return tuple(items)


# ----------------------------------------------------------------------------- functions


def estimate(model: str, accelerator: str, *, input_len: int, output_len: int,
             count: int | None = None, tp: int = 1, pp: int = 1, ep: int = 1,
             precision: str = "bf16", kv_precision: str | None = None,
             batch: int | None = None, max_batch: int | None = None,
             scenario: str = "static", engine: str = "trtllm",
             prefill_chunk: int | None = None, kv_offload: str | None = None,
             draft_len: int = 0, acceptance: float = 0.7, draft_model: str | None = None,
             rate_rps: float | None = None, arrival: str = "poisson", arrival_cv: float = 1.0,
             input_dist: str | None = None, output_dist: str | None = None,
             prefix_hit: float = 0.0, trace: str | Path | None = None,
             disaggregate: str | None = None, prefill_tp: int | None = None,
             prefill_pp: int | None = None, prefill_ep: int | None = None,
             kv_link: str = "scale-out",
             attention_dp: int | None = None, classes: Sequence[str] | None = None,
             calibration: str | Path | CalibrationSet | None = None,
             catalog: Catalog | None = None) -> EstimateResult:
    """Predict latency, throughput, memory and energy of one serving configuration.

    The same as ``fleetplan estimate``; ``to_json()`` of the result is its ``--format json``.

    Parameters
    ----------
    model : str
        Catalog model id (``fleetplan catalog list models``) or a path to a config.json or a
        model YAML.
    accelerator : str
        Catalog accelerator id.
    input_len, output_len : int
        Prompt and generated tokens per request (means when `input_dist` / `output_dist`
        are given).
    count : int, optional
        Accelerators in the replica; must equal ``tp * pp`` when given.
    tp, pp, ep : int
        Tensor-, pipeline- and expert-parallel degrees (`ep` divides `tp`).
    precision, kv_precision : str
        Weight/GEMM precision (``bf16``, ``fp8``, ``int4``, ...) and KV-cache precision
        (default: the engine's choice for `precision`).
    batch : int, optional
        Requests in the batch (static scenario) or the cap on running sequences.
    max_batch : int, optional
        Cap on running sequences; give `batch` or `max_batch`, not both.
    scenario : {"static", "max_throughput"}
        A batch that starts together, or unlimited arrivals batched as memory allows. The
        static scenario needs `batch` unless `rate_rps` is given.
    engine : str
        Serving engine profile id (``trtllm``, ``vllm``, ``sglang``, ``eager``).
    prefill_chunk : int, optional
        Token budget per step (chunked prefill); default: the engine's.
    kv_offload : str, optional
        Host memory tier id that takes KV cache beyond device memory.
    draft_len : int
        Speculative decoding: drafted tokens per step (0 = off).
    acceptance : float
        Speculative decoding: acceptance probability per drafted token, 0..1.
    draft_model : str, optional
        Draft model id (default: drafting heads inside the target model).
    rate_rps : float, optional
        Offered load, requests/s: adds latency percentiles under this load.
    arrival : {"poisson", "gamma"}
        Arrival process; `arrival_cv` is the coefficient of variation of gamma
        inter-arrival times (dimensionless).
    input_dist, output_dist : str, optional
        Length distributions, ``"fixed:N"`` or ``"lognormal:MEAN:STD"`` (tokens).
    prefix_hit : float
        Fraction of prompt tokens a prefix cache saves, 0..1.
    trace : str or Path, optional
        CSV of ``arrival_s,input_len,output_len``: its rate, burstiness and lengths set the
        load (they replace `rate_rps`, `arrival`, the lengths and their distributions).
    disaggregate : str, optional
        ``"P:D"``: also serve `rate_rps` with P prefill and D decode replicas, the KV cache
        over the NICs (each accelerator of the smaller replica with its own).
    prefill_tp, prefill_pp, prefill_ep : int, optional
        With `disaggregate`: the prefill replicas' parallelism (default: `tp`, `pp`, `ep`,
        which the decode replicas run), as a ``fleetplan plan`` unit may split its pools.
    kv_link : {"scale-out", "scale-up"}
        With `disaggregate`: the KV caches over the NICs, or over the scale-up link (a unit
        in one scale-up domain, as ``fleetplan plan`` places one that fits).
    attention_dp : int, optional
        Attention data-parallel groups inside the tensor group (divides `tp`): each group
        attends for its own sequences; default: the engine's choice (one group, unless the
        engine runs MoE models with attention data parallelism).
    classes : sequence of str, optional
        Request classes sharing the replica under `rate_rps`, each
        ``"name=N share=S input=DIST output=DIST [ttft_p99=S ...]"``; the report adds
        ``latency_by_class``. Shares sum to 1.
    calibration : str, Path or CalibrationSet, optional
        Efficiency parameters: a YAML file from ``fleetplan calibrate``, or one loaded
        already (default: the catalog's).
    catalog : Catalog, optional
        The catalog to resolve ids in (default: the shipped one).

    Returns
    -------
    EstimateResult

    Raises
    ------
    SpecError
        An unknown id, an invalid value, or a parallelism the model or chip cannot run.
    """
    cat = catalog if catalog is not None else load_catalog()
    if batch is not None and max_batch is not None:
        raise SpecError("give --batch or --max-batch, not both", field="max_batch")
    req = _request(model, accelerator, input_len, output_len, count, tp, pp, ep, precision,
                   kv_precision, max_batch if max_batch is not None else batch, scenario,
                   engine, prefill_chunk, kv_offload, draft_len, acceptance, draft_model,
                   rate_rps, arrival, arrival_cv, input_dist, output_dist, prefix_hit,
                   disaggregate, attention_dp, classes, (prefill_tp, prefill_pp, prefill_ep),
                   kv_link)
    if trace is not None:
        req = trace_request(req, read_trace(Path(trace)))
    return EstimateResult.of(req, run_estimate(req, cat, _calibration(cat, calibration)))


def goodput(model: str, accelerator: str, *, input_len: int, output_len: int,
            ttft_p99_s: float | None = None, tpot_p99_s: float | None = None,
            ttft_p90_s: float | None = None, tpot_p90_s: float | None = None,
            ttft_p50_s: float | None = None, tpot_p50_s: float | None = None,
            e2e_p99_s: float | None = None, e2e_p90_s: float | None = None,
            e2e_p50_s: float | None = None,
            count: int | None = None, tp: int = 1, pp: int = 1, ep: int = 1,
            precision: str = "bf16", kv_precision: str | None = None,
            engine: str = "trtllm", prefill_chunk: int | None = None,
            kv_offload: str | None = None, draft_len: int = 0, acceptance: float = 0.7,
            draft_model: str | None = None, max_batch: int | None = None,
            arrival: str = "poisson", arrival_cv: float = 1.0,
            input_dist: str | None = None, output_dist: str | None = None,
            prefix_hit: float = 0.0, attention_dp: int | None = None,
            classes: Sequence[str] | None = None,
            calibration: str | Path | CalibrationSet | None = None,
            catalog: Catalog | None = None) -> GoodputResult:
    """The highest request rate one replica sustains within latency objectives.

    The same as ``fleetplan goodput``; ``to_json()`` of the result is its ``--format json``.

    Parameters
    ----------
    model, accelerator, input_len, output_len
        As for `estimate`.
    ttft_p99_s, tpot_p99_s, ttft_p90_s, tpot_p90_s, ttft_p50_s, tpot_p50_s, e2e_p99_s, \
e2e_p90_s, e2e_p50_s : float, optional
        Latency objectives, seconds: time to first token, time per output token and end to
        end, at the 99th, 90th or 50th percentile. At least one is needed, here or in a
        class.
    count, tp, pp, ep, precision, kv_precision, engine, prefill_chunk, kv_offload, \
draft_len, acceptance, draft_model
        As for `estimate`.
    max_batch : int, optional
        Cap on running sequences.
    arrival, arrival_cv, input_dist, output_dist, prefix_hit, attention_dp, calibration, \
catalog
        As for `estimate`.
    classes : sequence of str, optional
        As for `estimate`: each class's own objectives must hold for its requests too, and
        the binding term names the class (``"rag.ttft_p99"``).

    Returns
    -------
    GoodputResult

    Raises
    ------
    SpecError
        No objective, an objective that is not a positive number of seconds, or what
        `estimate` rejects.
    """
    cat = catalog if catalog is not None else load_catalog()
    req = _request(model, accelerator, input_len, output_len, count, tp, pp, ep, precision,
                   kv_precision, max_batch, "max_throughput", engine, prefill_chunk,
                   kv_offload, draft_len, acceptance, draft_model, None, arrival, arrival_cv,
                   input_dist, output_dist, prefix_hit, None, attention_dp, classes)
    bounds = {"ttft_p99_s": ttft_p99_s, "tpot_p99_s": tpot_p99_s, "ttft_p90_s": ttft_p90_s,
              "tpot_p90_s": tpot_p90_s, "ttft_p50_s": ttft_p50_s, "tpot_p50_s": tpot_p50_s,
              "e2e_p99_s": e2e_p99_s, "e2e_p90_s": e2e_p90_s, "e2e_p50_s": e2e_p50_s}
    checked: dict[str, float | None] = {}
    for name, bound in bounds.items():
        value = _real_or_none(bound, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SpecError(f"must be a positive number of seconds, got {bound!r}",
                            field=name)
        checked[name] = value
    slo = Slo(**checked)
    if not slo.items() and not any(c.slo for c in request_classes(req)):
        raise SpecError("give at least one SLO, e.g. --slo-ttft-p99 1.0 (or a class's "
                        "ttft_p99=...)", field="slo")
    return GoodputResult.of(req, run_goodput(req, slo, cat, _calibration(cat, calibration)))


def _raw(value: Any) -> Any:
    """A mapping as the YAML loader would give it: LineDicts (with no lines), so that errors
    name the field path as they do for a file."""
    if isinstance(value, Mapping):
        out = LineDict()
        out.lines = {}
        out.line = None
        for key, item in value.items():
            out[str(key)] = _raw(item)
        return out
    if isinstance(value, list | tuple):
        return [_raw(v) for v in value]
    return value


def load_spec(spec: str | Path | Mapping[str, Any], *,
              source: str = MAPPING_SOURCE) -> LoadedSpec:
    """Read and validate a plan spec.

    Parameters
    ----------
    spec : str, Path or Mapping
        A YAML file (``fleetplan schema spec`` is its JSON Schema), or the same structure as
        a mapping.
    source : str
        What errors call a mapping (a file is called by its path). Relative paths inside a
        mapping are relative to the working directory.

    Returns
    -------
    LoadedSpec
        The validated spec (``.spec``) with where it came from, so that later errors can
        point at the line.

    Raises
    ------
    SpecError
        Unreadable file, malformed YAML, or a spec that does not validate; with the file,
        line and field (``spec.yaml:7: field 'workloads[0].rate_rps': ...``).
    """
    if isinstance(spec, str | Path):
        return _load_spec_file(Path(spec))
    if isinstance(spec, Mapping):
        return parse_spec(_raw(spec), source)
    raise SpecError(f"expected a spec file path or a mapping, got {type(spec).__name__}")


def plan(spec: str | Path | Mapping[str, Any] | LoadedSpec, *,
         accelerators: Sequence[str] | None = None, timings: bool = False,
         catalog: Catalog | None = None, progress: Progress | None = None) -> PlanResult:
    """Choose accelerators, parallelism, batch limits and routing for workloads under SLOs.

    The same as ``fleetplan plan SPEC``; ``to_json()`` of the result is its ``--format json``.
    The mix integer program runs in process (HiGHS through highspy).

    Parameters
    ----------
    spec : str, Path, Mapping or LoadedSpec
        A spec file, a mapping with the same structure, or the result of `load_spec`.
    accelerators : sequence of str, optional
        Plan with just these accelerator types: pool entries the spec has keep their
        limits and prices, others join with catalog defaults.
    timings : bool
        Put solve times (seconds) in the report; it then differs run to run.
    catalog : Catalog, optional
        The catalog to resolve ids in (default: the shipped one).
    progress : callable, optional
        Called as ``progress(what, done, total)`` while the search runs.

    Returns
    -------
    PlanResult
        Also when no plan meets the SLOs: then ``infeasible`` is true and
        ``report.closest`` says what comes closest.

    Raises
    ------
    SpecError
        A spec that does not validate or names unknown ids, located by file, line and field.
    """
    from .planner import resolve_plan, run_plan
    from .report import build_report
    from .spec import restrict_pool

    cat = catalog if catalog is not None else load_catalog()
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(spec)
    if accelerators is not None:
        loaded = restrict_pool(loaded, list(accelerators))
    inputs = resolve_plan(loaded, cat)
    return PlanResult(build_report(inputs, run_plan(inputs, cat, progress=progress),
                                   timings=timings))


def compare_options(spec: str | Path | Mapping[str, Any] | LoadedSpec,
                    accelerators: Sequence[str], *, catalog: Catalog | None = None,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    """Plan a spec with each accelerator type alone and with all of them (``fleetplan compare
    SPEC --accelerators a,b,c``): one row per option with its status, cost (USD/h and USD per
    million output tokens), accelerator count, allocations and worst p99 TTFT/TPOT (s)."""
    from .compare import option_pools, option_row

    cat = catalog if catalog is not None else load_catalog()
    loaded = spec if isinstance(spec, LoadedSpec) else load_spec(spec)
    return [option_row(pool, plan(loaded, accelerators=pool, catalog=cat,
                                  progress=progress).to_dict())
            for pool in option_pools(list(accelerators))]


@dataclass(frozen=True)
class TrainEstimateResult(_ReportBacked):
    """One training layout's prediction: the headline figures and the whole report.

    Attributes
    ----------
    fits : bool
        The layout is legal and its memory fits on every device.
    step_time_s : float
        Seconds per optimizer step.
    tokens_per_s_per_accelerator : float
        Training tokens/s per accelerator.
    model_tflops_per_accelerator : float
        Model TFLOP/s per accelerator on the framework's FLOP-counting convention.
    mfu : float
        Model FLOPs utilisation, a fraction of the precision's dense peak.
    memory_bytes : float
        Bytes per device on the fullest pipeline stage.
    report : Mapping
        The report as `fleetplan train estimate --format json` prints it.
    """

    fits: bool
    step_time_s: float
    tokens_per_s_per_accelerator: float
    model_tflops_per_accelerator: float
    mfu: float
    memory_bytes: float
    report: Mapping[str, Any] = field(repr=False, hash=False)

    @property
    def infeasible(self) -> bool:
        """It does not fit (the CLI exits 1)."""
        return not self.fits


def train_estimate(model: str, accelerator: str, *, count: int, global_batch: int,
                   seq_len: int, tp: int = 1, pp: int = 1, dp: int | None = None, cp: int = 1,
                   ep: int = 1, vp: int = 1, micro_batch: int = 1, precision: str = "bf16",
                   recompute: str | None = None, zero: int | None = None,
                   offload_optimizer: bool = False, offload_activations: float = 0.0,
                   engine: str = "megatron",
                   calibration: str | Path | CalibrationSet | None = None,
                   catalog: Catalog | None = None) -> TrainEstimateResult:
    """Step time, throughput, MFU and memory of one training layout.

    Parameters
    ----------
    model, accelerator : str
        Catalog ids (or a config.json path for the model).
    count : int
        Accelerators in the job; `dp` defaults to count / (tp x pp x cp).
    global_batch : int
        Sequences per optimizer step; `micro_batch` sequences per micro-batch.
    seq_len : int
        Tokens per sequence.
    tp, pp, dp, cp, ep, vp : int
        Tensor, pipeline, data, context, expert parallel degrees; virtual stages per device.
    precision : str
        Format of the weight GEMMs (bf16, fp16, fp8, fp4).
    recompute : {"none", "selective", "full"}, optional
        Activation recomputation; the framework's default when None.
    zero : int, optional
        ZeRO stage 0..3 (1: distributed optimizer, 3: FSDP); the framework's default if None.
    offload_optimizer : bool
        Optimizer states and the Adam step in host memory.
    offload_activations : float
        Fraction of layers whose saved activations go to host memory, 0..1.
    engine : str
        Training framework id (``catalog/training_engines.yaml``).

    Returns
    -------
    TrainEstimateResult
    """
    from .train import TrainRequest, estimate_training

    cat = catalog or load_catalog()
    req = TrainRequest(model=_text(model, "model"), accelerator=_text(accelerator, "accelerator"),
                       count=_whole(count, "count"),
                       global_batch=_whole(global_batch, "global_batch"),
                       seq_len=_whole(seq_len, "seq_len"), tp=_whole(tp, "tp"),
                       pp=_whole(pp, "pp"), dp=_whole_or_none(dp, "dp"), cp=_whole(cp, "cp"),
                       ep=_whole(ep, "ep"), vp=_whole(vp, "vp"),
                       micro_batch=_whole(micro_batch, "micro_batch"),
                       precision=_text(precision, "precision"), recompute=recompute,
                       zero=_whole_or_none(zero, "zero"),
                       offload_optimizer=bool(offload_optimizer),
                       offload_activations=_real(offload_activations, "offload_activations"),
                       engine=_text(engine, "engine"))
    report = estimate_training(req, cat, _calibration(cat, calibration))
    return TrainEstimateResult(
        fits=bool(report["fits"]), step_time_s=float(report["step_time_s"]),
        tokens_per_s_per_accelerator=float(report["tokens_per_s_per_accelerator"]),
        model_tflops_per_accelerator=float(report["model_tflops_per_accelerator"]),
        mfu=float(report["mfu"]), memory_bytes=float(report["memory"]["total"]),
        report=report)
