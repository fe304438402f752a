"""Charts (the `plot` extra): the roofline of an accelerator with a model's operators on it,
latency versus load, the cost-latency Pareto fronts of a plan, and a training memory breakdown.

The only module that imports matplotlib, and only when a chart is drawn: the data-gathering
functions here work without it. Figures are `matplotlib.figure.Figure` objects (no pyplot
state, no GUI backend); the file suffix (.png or .svg) picks the format; files are written
atomically, and the same input gives a byte-identical SVG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..hardware.catalog import Catalog
from ..hardware.efficiency import CalibrationSet
from ..hardware.errors import SpecError
from ..models.inference import max_throughput
from ..models.op_breakdown import OpPoint, max_throughput_phases, op_points, static_phases
from .estimate import EstimateRequest, resolve
from .output import atomic_write_bytes, fmt_si, parallelism_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}
INSTALL_HINT = "pip install 'fleetplan[plot]'"
GIB = float(2**30)
_DPI = 120
# A fixed hash salt makes the SVG's element ids (and so its bytes) depend on the input only;
# text as paths keeps the file independent of the reader's fonts.
_RC: dict[str, Any] = {"svg.hashsalt": "fleetplan", "svg.fonttype": "path", "font.size": 9.0,
                       "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8.0}
_METADATA: dict[str, dict[str, Any]] = {"svg": {"Date": None}, "png": {}}
_PHASE_MARKERS = {"prefill": "o", "decode": "s"}
# Roof colours outside matplotlib's default cycle, which colours the operators.
_ROOF_COLORS = ("#b2182b", "#5e3c99", "#1b7837", "#8c510a")
_SLOPE_COLORS = ("0.25", "0.6", "#8c6d31")


# ----------------------------------------------------------------------------- files


def image_format(path: Path) -> str:
    """"png" or "svg" from the file suffix; anything else is a SpecError (a ValueError)."""
    suffix = Path(path).suffix
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        raise SpecError(f"{path}: cannot draw a {suffix or 'suffix-less'} file; name it "
                        "FILE.png or FILE.svg", field="plot")
    return fmt


def _matplotlib() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        raise SpecError(f"plots need matplotlib: {INSTALL_HINT}", field="plot") from None
    return matplotlib


def check_target(path: Path) -> str:
    """Fail early, before any modelling, when `path` cannot be drawn: a suffix other than
    .png/.svg, a folder that does not exist, or matplotlib missing. Returns the format."""
    fmt = image_format(path)
    folder = Path(path).parent
    if not folder.is_dir():
        raise SpecError(f"{path}: no folder {folder} to write the image in", field="plot")
    _matplotlib()
    return fmt


def _write_atomic(path: Path, data: bytes) -> None:
    """Via a temporary file in the same folder and a rename, so a reader never sees half an
    image and a failure leaves the old file in place."""
    atomic_write_bytes(path, data)


@contextmanager
def _drawing(path: Path, size_in: tuple[float, float]) -> Iterator[Figure]:
    """A fresh figure (`size_in` in inches) saved to `path` when the block ends without error."""
    fmt = image_format(path)
    mpl = _matplotlib()
    from matplotlib import style
    from matplotlib.figure import Figure

    buf = io.BytesIO()
    # Matplotlib's own defaults, not the user's matplotlibrc, so a chart looks (and an SVG
    # reads) the same on every machine with the same matplotlib.
    with style.context("default"), mpl.rc_context(_RC):
        fig = Figure(figsize=size_in, layout="constrained")
        yield fig
        fig.savefig(buf, format=fmt, dpi=_DPI, metadata=_METADATA[fmt])
    _write_atomic(Path(path), buf.getvalue())


def _null_locator() -> Any:
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _eng(unit: str) -> Any:
    from matplotlib.ticker import EngFormatter

    return EngFormatter(unit=unit)


# ----------------------------------------------------------------------------- roofline


@dataclass(frozen=True)
class Ceiling:
    """A compute roof (FLOP/s) or a memory slope (bytes/s) of a roofline chart."""

    label: str
    value: float
    achievable: bool = False
    """Peak times the calibrated efficiency (drawn dashed) rather than the datasheet peak."""


@dataclass(frozen=True)
class RooflineData:
    """Roofs, slopes and operators (per device of the bottleneck stage) of one configuration."""

    title: str
    roofs: tuple[Ceiling, ...]
    """An achievable roof follows its datasheet roof and shares its colour."""
    slopes: tuple[Ceiling, ...]
    """Likewise, one memory tier after another."""
    points: tuple[OpPoint, ...]


def roofline_data(req: EstimateRequest, catalog: Catalog,
                  calibration: CalibrationSet) -> RooflineData:
    """The accelerator's roofs and the operators of the prefill and decode steps that
    `run_estimate` prices for `req` (same scenario, batch and speculative decoding)."""
    r = resolve(req, catalog, calibration)
    rep, spec, eff = r.replica, r.spec, r.efficiency
    acc = rep.device.accelerator
    if req.scenario == "static" and req.batch is not None:
        phases = static_phases(rep, batch=req.batch, input_len=req.input_len,
                               output_len=req.output_len, spec=spec)
        scenario = f"static batch {req.batch}"
    else:
        est = max_throughput(rep, input_len=req.input_len, output_len=req.output_len,
                             max_batch=req.batch, prefill_chunk=req.prefill_chunk, spec=spec)
        phases = max_throughput_phases(rep, batch=est.batch, input_len=req.input_len,
                                       output_len=req.output_len, spec=spec)
        scenario = f"max throughput, {float(est.batch):.0f} running"
    # Log axes cannot place an operator without FLOPs or bytes.
    points = tuple(p for ph in phases for p in op_points(rep, ph)
                   if p.flops > 0 and p.bytes_moved > 0 and p.time_s > 0)
    gemm = acc.compute_precision(req.precision)
    peak = float(np.asarray(rep.peak_flops))
    roofs = _pair(f"{gemm} peak {fmt_si(peak, 'FLOP/s')}", f"{gemm} achievable", peak,
                  eff.compute)
    act = acc.compute_precision("bf16")
    if act != gemm:
        # Attention and element-wise math stay in the 16-bit format when GEMMs go narrower.
        roofs += _pair(f"{act} peak {fmt_si(rep.act_peak_flops, 'FLOP/s')} (attention, "
                       "element-wise)", f"{act} achievable", rep.act_peak_flops, eff.compute)
    slopes: list[Ceiling] = []
    for tier in acc.device_memory:
        # Catalog technology strings can be whole sentences; the tier kind then names it.
        name = tier.technology if 0 < len(tier.technology) <= 12 else tier.kind.upper()
        bw = tier.bandwidth_bytes_s
        slopes += _pair(f"{name} {fmt_si(bw, 'B/s')}", f"{name} achievable", bw, eff.memory)
    title = (f"{rep.arch.id} on {acc.id}, {req.precision} (GEMMs in {gemm}), tp={req.tp} "
             f"pp={req.pp}, {req.input_len} in / {req.output_len} out, {scenario}; "
             "per device")
    return RooflineData(title, tuple(roofs), tuple(slopes), points)


def _pair(peak_label: str, achievable_label: str, peak: float,
          efficiency: float) -> list[Ceiling]:
    """The datasheet ceiling and, where calibration puts it lower, the achievable one."""
    out = [Ceiling(peak_label, peak)]
    if efficiency < 1.0:
        out.append(Ceiling(f"{achievable_label} (x{efficiency:.2f})", peak * efficiency, True))
    return out


def render_roofline(data: RooflineData, path: Path) -> None:
    """Log-log roofline: FLOP/s against arithmetic intensity (FLOP/byte), the roofs and memory
    slopes (datasheet solid, achievable dashed), each operator of each step as a labelled
    point (achieved FLOP/s = FLOPs / roofline time)."""
    if not data.roofs or not data.slopes:
        raise ValueError("a roofline needs at least one compute roof and one memory slope")
    if not all(math.isfinite(c.value) and c.value > 0 for c in data.roofs + data.slopes):
        raise ValueError("roofs and slopes must be positive numbers")
    # Log axes cannot place an operator without FLOPs or bytes.
    points = [p for p in data.points if 0 < p.intensity_flop_per_byte < math.inf
              and 0 < p.achieved_flops_s < math.inf]
    with _drawing(path, (10.0, 6.5)) as fig:
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ridges = [r.value / s.value for r in data.roofs for s in data.slopes]
        xs_known = ridges + [p.intensity_flop_per_byte for p in points]
        lo, hi = min(xs_known) / 8.0, max(xs_known) * 8.0
        top = max(r.value for r in data.roofs)
        low = min([p.achieved_flops_s for p in points] + [s.value * lo for s in data.slopes])
        xs = np.geomspace(lo, hi, 256)
        tier = 0
        for k, s in enumerate(data.slopes):
            tier += 0 if s.achievable or k == 0 else 1
            roof = max((r.value for r in data.roofs if r.achievable == s.achievable),
                       default=top)
            seg = xs[s.value * xs <= roof]
            seg = np.append(seg, roof / s.value)
            ax.plot(seg, s.value * seg, color=_SLOPE_COLORS[tier % len(_SLOPE_COLORS)], lw=1.2,
                    ls="--" if s.achievable else "-", label=f"memory: {s.label}")
        group = 0
        for k, r in enumerate(data.roofs):
            group += 0 if r.achievable or k == 0 else 1
            bw = max((s.value for s in data.slopes if s.achievable == r.achievable),
                     default=max(s.value for s in data.slopes))
            start = r.value / bw
            ax.plot([start, hi], [r.value, r.value], lw=1.6,
                    color=_ROOF_COLORS[group % len(_ROOF_COLORS)],
                    ls="--" if r.achievable else "-", label=f"compute: {r.label}")
        _op_points(ax, points)
        ax.set_xlim(lo, hi)
        ax.set_ylim(low / 3.0, top * 3.0)
        # Decade ticks suffice on axes that span many decades (minor ones double the time).
        ax.xaxis.set_minor_locator(_null_locator())
        ax.yaxis.set_minor_locator(_null_locator())
        ax.yaxis.set_major_formatter(_eng("FLOP/s"))
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("FLOP/s per device")
        ax.set_title(data.title, fontsize=9)
        ax.legend(loc="lower right")


def _op_points(ax: Axes, points: Sequence[OpPoint]) -> None:
    colors: dict[str, str] = {}
    for p in points:
        colors.setdefault(p.name, f"C{len(colors) % 10}")
    for phase, marker in _PHASE_MARKERS.items():
        # Legend entries for the step shapes only; the text beside each point names the op.
        ax.scatter([], [], marker=marker, facecolor="none", edgecolor="black",
                   label=f"{phase} step operator")
    # Operators of one shape often sit on top of one another (qkvo and mlp GEMMs): one label
    # per cluster keeps the names readable.
    clusters: list[tuple[float, float, list[OpPoint]]] = []
    for p in points:
        x, y = p.intensity_flop_per_byte, p.achieved_flops_s
        ax.scatter([x], [y], marker=_PHASE_MARKERS.get(p.phase, "^"), s=40,
                   color=colors[p.name], edgecolor="black", linewidth=0.5, zorder=4)
        for cx, cy, members in clusters:
            if abs(math.log10(x / cx)) < 0.08 and abs(math.log10(y / cy)) < 0.08:
                members.append(p)
                break
        else:
            clusters.append((x, y, [p]))
    # Neighbouring labels alternate above and below their points so they do not overlap.
    for k, (cx, cy, members) in enumerate(sorted(clusters, key=lambda c: c[0])):
        phases = dict.fromkeys(m.phase for m in members)
        text = "; ".join(f"{ph}: " + ", ".join(m.name for m in members if m.phase == ph)
                         for ph in phases)
        ax.annotate(text, (cx, cy), xytext=(6, 4 if k % 2 == 0 else -11),
                    textcoords="offset points", fontsize=7)


# ----------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyCurve:
    """Latency percentiles (s) of one replica at request rates (req/s)."""

    title: str
    rate_rps: tuple[float, ...]
    ttft_p50_s: tuple[float, ...]
    ttft_p99_s: tuple[float, ...]
    tpot_p50_s: tuple[float, ...]
    tpot_p99_s: tuple[float, ...]
    capacity_rps: float
    """The stability limit: the highest rate the replica drains."""
    slo_ttft_p99_s: float | None = None
    slo_tpot_p99_s: float | None = None


def latency_curve(sweep: Mapping[str, Any], *, slo_ttft_p99_s: float | None = None,
                  slo_tpot_p99_s: float | None = None) -> LatencyCurve:
    """From a `run_sweep` report (undefined latencies become gaps)."""
    for name, value in (("slo_ttft_p99", slo_ttft_p99_s), ("slo_tpot_p99", slo_tpot_p99_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SpecError(f"must be a positive number of seconds, got {value}", field=name)
    points = sweep["points"]

    def column(metric: str, pct: str) -> tuple[float, ...]:
        return tuple(_finite(p[metric][pct]) for p in points)

    i = sweep.get("inputs", {})
    title = (f"{i.get('model', '?')} on {i.get('accelerator', '?')} (tp={i.get('tp', '?')}) "
             f"{i.get('precision', '')}: latency versus load, one replica")
    return LatencyCurve(title, tuple(float(p["rate_rps"]) for p in points),
                        column("ttft_s", "p50"), column("ttft_s", "p99"),
                        column("tpot_s", "p50"), column("tpot_s", "p99"),
                        float(sweep["capacity_rps"]), slo_ttft_p99_s, slo_tpot_p99_s)


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def render_latency(curve: LatencyCurve, path: Path) -> None:
    """Two panels (TTFT, TPOT) of p50 and p99 latency against request rate, with the p99 SLO
    where given and the stability limit (capacity) as a vertical line."""
    with _drawing(path, (11.0, 4.8)) as fig:
        axes = fig.subplots(1, 2, sharex=True)
        panels = (("TTFT", curve.ttft_p50_s, curve.ttft_p99_s, curve.slo_ttft_p99_s),
                  ("TPOT", curve.tpot_p50_s, curve.tpot_p99_s, curve.slo_tpot_p99_s))
        for ax, (name, p50, p99, slo) in zip(axes, panels, strict=True):
            ax.plot(curve.rate_rps, p50, marker="o", ms=4, color="C0", label=f"{name} p50")
            ax.plot(curve.rate_rps, p99, marker="s", ms=4, color="C1", label=f"{name} p99")
            if slo is not None:
                ax.axhline(slo, color="C3", ls="--", label=f"p99 SLO {fmt_si(slo, 's')}")
            if math.isfinite(curve.capacity_rps) and curve.capacity_rps > 0:
                ax.axvline(curve.capacity_rps, color="0.3", ls=":",
                           label=f"stability limit {curve.capacity_rps:.3g} req/s")
                ax.set_xlim(0.0, curve.capacity_rps * 1.05)
            ax.set_ylim(bottom=0.0)
            ax.yaxis.set_major_formatter(_eng("s"))
            ax.set_xlabel("request rate (req/s)")
            ax.set_ylabel(f"{name} (s)")
            ax.legend(loc="upper left")
        fig.suptitle(curve.title, fontsize=10)


# ----------------------------------------------------------------------------- pareto


@dataclass(frozen=True)
class ParetoPoint:
    """One candidate: its p99 TTFT (s) and cost (USD per million output tokens)."""

    ttft_p99_s: float
    cost_usd_per_million_tokens: float
    label: str


@dataclass(frozen=True)
class ParetoData:
    """Each accelerator family's front, the candidates the plan chose, and the p99 TTFT SLOs.
    A family is "model@accelerator"; each model gets its own panel."""

    title: str
    fronts: tuple[tuple[str, tuple[ParetoPoint, ...]], ...]
    chosen: tuple[tuple[str, ParetoPoint], ...]
    """(family, point) of chosen candidates that lie on their family's front."""
    off_front: tuple[str, ...]
    """Chosen candidates the report has no cost-latency point for."""
    ttft_slos: tuple[tuple[str, str, float], ...] = ()
    """(model, workload, p99 TTFT bound in s)."""


def _candidate_label(c: Mapping[str, Any]) -> str:
    ep = f" ep{c['ep']}" if c.get("ep", 1) != 1 else ""
    adp = f" adp{c['attention_dp']}" if c.get("attention_dp", 1) != 1 else ""
    batch = f" b{c['max_batch']}" if c.get("max_batch") is not None else ""
    return f"tp{c['tp']} pp{c['pp']}{ep}{adp} {c['precision']}{batch}"


def pareto_data(report: Mapping[str, Any]) -> ParetoData:
    """From a plan report as JSON (`Report.model_dump(mode="json")` or a saved file)."""
    fronts = []
    on_front: dict[tuple[Any, ...], ParetoPoint] = {}
    for fam in report.get("search", []):
        pts = []
        for c in fam["pareto"]:
            ttft, cost = _finite(c["ttft_p99_s"]), _finite(c["cost_usd_per_million_output_tokens"])
            if math.isnan(ttft) or math.isnan(cost):
                continue
            point = ParetoPoint(ttft, cost, _candidate_label(c))
            pts.append(point)
            on_front[(fam["family"], c["precision"], c["tp"], c["pp"], c["ep"],
                      c.get("attention_dp", 1), c["max_batch"])] = point
        fronts.append((str(fam["family"]), tuple(sorted(pts, key=lambda p: p.ttft_p99_s))))
    model_of = {w["name"]: w.get("model") for w in report.get("workloads", [])}
    chosen, off = [], []
    for a in report.get("allocations", []):
        if a.get("disaggregated"):
            # The fronts are co-located replicas'; a unit of two pools has no point on them.
            batch = f" b{a['max_batch']}" if a.get("max_batch") is not None else ""
            off.append(f"{a['accelerator']} {parallelism_label(a)} {a['precision']}{batch}")
            continue
        # A family is one model on one accelerator type; the routes say which models.
        models = sorted({m for r in a["routes"] if (m := model_of.get(r["workload"]))})
        hits = [(f"{m}@{a['accelerator']}", on_front[key]) for m in models
                if (key := (f"{m}@{a['accelerator']}", a["precision"], a["tp"], a["pp"],
                            a["ep"], a.get("attention_dp", 1), a["max_batch"])) in on_front]
        chosen += hits
        if not hits:
            off.append(f"{a['replicas']}x {a['accelerator']} {_candidate_label(a)}")
    slos = tuple((str(w.get("model") or ""), str(w["name"]), float(w["slo"]["ttft_p99_s"]))
                 for w in report.get("workloads", []) if "ttft_p99_s" in w.get("slo", {}))
    cost_h = report.get("cost_usd_h")
    title = (f"cost-latency Pareto fronts per accelerator family; plan {report.get('status')}"
             + (f", {cost_h:.2f} USD/h" if isinstance(cost_h, int | float) and cost_h else ""))
    return ParetoData(title, tuple(fronts), tuple(chosen), tuple(off), slos)


def _model_of(family: str) -> str:
    return family.rpartition("@")[0] or family


def render_pareto(data: ParetoData, path: Path) -> None:
    """Cost per million output tokens against p99 TTFT, one panel per model: a line per
    accelerator family's front, the chosen candidates starred, the p99 TTFT SLOs of the
    model's workloads as vertical lines."""
    models = list(dict.fromkeys(_model_of(f) for f, _ in data.fronts)) or [""]
    cols = min(len(models), 3)
    rows = -(-len(models) // cols)
    with _drawing(path, (1.0 + 6.0 * cols, 0.8 + 4.6 * rows)) as fig:
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        color = {f: f"C{k % 10}" for k, (f, _) in enumerate(data.fronts)}
        for ax, model in zip(axes, models, strict=False):
            _pareto_panel(ax, data, model, color)
        for ax in axes[len(models):]:
            ax.set_visible(False)
        notes = []
        if not any(pts for _, pts in data.fronts):
            notes.append("no cost-latency front in this report (measured capacities, or no "
                         "candidate fits)")
        if data.off_front:
            notes.append("chosen, not on a front: " + "; ".join(data.off_front))
        if notes:
            axes[0].text(0.01, 0.01, "\n".join(notes), transform=axes[0].transAxes,
                         fontsize=8, va="bottom")
        fig.suptitle(data.title, fontsize=10)


def _pareto_panel(ax: Axes, data: ParetoData, model: str, color: Mapping[str, str]) -> None:
    fronts = [(f, pts) for f, pts in data.fronts if _model_of(f) == model]
    chosen = [(f, p) for f, p in data.chosen if _model_of(f) == model]
    picked = {(f, p) for f, p in chosen}
    # Per-point labels only where they stay legible; chosen points are always named.
    named = sum(len(pts) for _, pts in fronts) <= 12
    costs = [p.cost_usd_per_million_tokens for _, pts in fronts for p in pts]
    for family, pts in fronts:
        if not pts:
            continue
        ax.plot([p.ttft_p99_s for p in pts], [p.cost_usd_per_million_tokens for p in pts],
                marker="o", color=color[family], label=family.rpartition("@")[2] or family)
        for p in pts:
            if named and (family, p) not in picked:
                ax.annotate(p.label, (p.ttft_p99_s, p.cost_usd_per_million_tokens),
                            xytext=(5, -10), textcoords="offset points", fontsize=7,
                            color=color[family])
    for k, (family, p) in enumerate(chosen):
        ax.scatter([p.ttft_p99_s], [p.cost_usd_per_million_tokens], marker="*", s=260,
                   color=color.get(family, "C7"), edgecolor="black", zorder=5,
                   label="chosen" if k == 0 else None)
        ax.annotate(f"chosen: {p.label}", (p.ttft_p99_s, p.cost_usd_per_million_tokens),
                    xytext=(8, 6), textcoords="offset points", fontsize=8, fontweight="bold")
    by_bound: dict[float, list[str]] = {}
    for slo_model, workload, bound in data.ttft_slos:
        if slo_model == model or not model:
            by_bound.setdefault(bound, []).append(workload)
    for bound, workloads in sorted(by_bound.items()):
        ax.axvline(bound, color="C3", ls="--", lw=1,
                   label=f"p99 TTFT SLO {fmt_si(bound, 's')} ({', '.join(workloads)})")
    if costs and min(costs) > 0 and max(costs) / min(costs) > 20.0:
        ax.set_yscale("log")
    ax.xaxis.set_major_formatter(_eng("s"))
    ax.set_xlabel("p99 TTFT of the workload mix (s)")
    ax.set_ylabel("USD per million output tokens")
    ax.set_title(model, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")


# ----------------------------------------------------------------------------- training memory

# Stacking order (bottom to top) of the usual components; others follow in the order given.
_MEMORY_ORDER = ("weights", "gradients", "optimizer", "activations", "other")


def render_memory_breakdown(bars: Sequence[tuple[str, Mapping[str, float]]],
                            capacity_bytes: float, path: Path, *,
                            title: str = "training memory per device") -> None:
    """One stacked bar per configuration (label, component -> bytes), drawn in GiB (2**30
    bytes), with the device capacity (bytes) as a horizontal line."""
    if not bars:
        raise ValueError("no configurations to draw")
    if not (math.isfinite(capacity_bytes) and capacity_bytes > 0):
        raise ValueError(f"capacity_bytes must be a positive number, got {capacity_bytes}")
    names: list[str] = [c for c in _MEMORY_ORDER if any(c in parts for _, parts in bars)]
    for label, parts in bars:
        for name, value in parts.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label}: {name} must be a non-negative number of bytes, "
                                 f"got {value}")
            if name not in names:
                names.append(name)
    labels = [label for label, _ in bars]
    with _drawing(path, (max(6.0, 1.1 * len(bars) + 3.0), 5.5)) as fig:
        ax = fig.add_subplot()
        x = np.arange(len(bars), dtype=np.float64)
        bottom = np.zeros(len(bars))
        for k, name in enumerate(names):
            gib = np.array([float(parts.get(name, 0.0)) for _, parts in bars]) / GIB
            ax.bar(x, gib, 0.6, bottom=bottom, color=f"C{k % 10}", label=name)
            bottom += gib
        cap = capacity_bytes / GIB
        ax.set_axisbelow(True)
        ax.axhline(cap, color="black", ls="--", label=f"capacity {cap:.4g} GiB")
        for xi, total in zip(x, bottom, strict=True):
            over = total > cap
            ax.annotate(f"{total:.3g} GiB" + (" (does not fit)" if over else ""), (xi, total),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8,
                        color="C3" if over else "black", fontweight="bold" if over else None)
        ax.set_xticks(x, labels)
        if len(bars) > 6 or max(len(s) for s in labels) > 14:
            ax.tick_params(axis="x", labelrotation=25)
        ax.set_ylim(0.0, max(cap, float(bottom.max())) * 1.15)
        ax.set_ylabel("GiB per device (1 GiB = 2^30 bytes)")
        ax.set_title(title, fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
