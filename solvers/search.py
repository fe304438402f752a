"""Candidate search: every configuration of one model on one accelerator type, priced by the
models in vectorised passes.

The grid is precision x TP x PP x EP x attention DP x max batch x prefill chunk. Shapes the
model cannot split and replicas whose weights do not fit are masked. A cheap screen over every
replica (format, parallelism and prefill chunk) and every request bucket (latency floors of one
request alone, and the roofline throughput limit) ranks the replicas by cost per request/s; the
best of them per bucket and prefill chunk, and the best of each replica size, then get the full
serving model: the highest request rate per replica that meets the bucket's latency objectives
(goodput), at the largest batch limit listed.

The batch limit is settled by dominance rather than ranked. It only caps how many sequences
run at once: below a replica's capacity the batch is what the arrival rate makes it, so a
higher limit changes nothing but the waits for a slot (shorter) and the capacity (higher), and
the goodput at the largest limit is the best the list offers, within the model's resolution
(over every fitting replica of the bundled examples and limits 1-512, a higher limit never
lowered the goodput by more than 0.9% except where it was under 0.002 requests/s; a cap only
pays where the TPOT binds and the TTFT has room to queue, see `tests/test_search_superset.py`).
The screen therefore ranks replicas without a batch limit (the KV cache and the token budget
bound them), so the list cannot change which replicas are shortlisted, and listing more limits
cannot raise a plan's cost. Once the mix is solved, each chosen replica gets the smallest listed
limit that still carries its planned load (`limits_carrying`): the same plan, with the engine
setting that holds TPOT best when the load runs over the plan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..hardware.llm import ModelArch
from ..models.arrays import BoolArray, FloatArray
from ..models.device import Device
from ..models.inference import (
    IDLE_POWER_FRACTION,
    Replica,
    build_replica,
    default_attention_dp,
    max_throughput,
    static,
)
from ..models.queueing import QUANTILES, Lengths, Slo, Workload, goodput
from ..models.transformer import parallel_fits

# Bisection steps on the request rate: capacity / 2**12, a 0.02% resolution.
GOODPUT_ITERATIONS = 12
# Regula falsi steps of the screen on the batch that meets a TPOT objective (a ranking: the
# bundled examples plan the same, at the same cost, as with a 10-step bisection).
SCREEN_BATCH_STEPS = 3


@dataclass(frozen=True)
class SearchSpace:
    """The values each axis of the grid takes."""

    precisions: tuple[str, ...]
    tp: tuple[int, ...]
    pp: tuple[int, ...]
    ep: tuple[int, ...] | None
    """None: 1 and the whole tensor-parallel group (MoE models only)."""
    max_batch: tuple[int, ...]
    prefill_chunk: tuple[int, ...] | None
    """None: the engine's own token budget."""
    allow_cross_node_tp: bool = False
    shortlist: int = 6
    disaggregation: Literal["off", "on", "auto"] = "off"
    """off: co-located replicas only; on: only units of a prefill and a decode pool (see
    `solvers.disaggregated`); auto: both compete in the mix."""
    pd_ratios: tuple[tuple[int, int], ...] = ((1, 1),)
    """(prefill, decode) replicas of a disaggregated unit, one pair per unit shape."""
    pd_parallelism: Literal["independent", "shared"] = "independent"
    """independent: a unit's prefill and decode replicas may differ in TP, PP and EP;
    shared: both pools run one parallelism (engines that need it)."""
    attention_dp: tuple[int, ...] | None = None
    """Attention data-parallel groups inside the tensor group (each TP width takes the values
    that divide it); None: the engine's choice for the model."""


@dataclass(frozen=True)
class Family:
    """One model on one accelerator type: what its candidates share."""

    key: str
    arch: ModelArch
    device: Device
    price_usd_h: float
    """Per accelerator-hour (0 when unknown; the spec then may not ask for the cost
    objective)."""
    max_devices: float
    """Accelerators of this type available (inf when unlimited)."""
    scale_up_domain: int


@dataclass(frozen=True)
class BucketLoad:
    """A request bucket: its lengths and arrival process (the rate is set by the search), the
    latency objectives of its workload, and its demand."""

    name: str
    workload: str
    load: Workload
    slo: Slo
    demand_rps: float


@dataclass(frozen=True)
class Candidates:
    """The evaluated candidates of one family, one row each, with goodput per bucket."""

    family: Family
    precision: np.ndarray
    tp: np.ndarray
    pp: np.ndarray
    ep: np.ndarray
    attn_dp: np.ndarray
    """Attention data-parallel groups inside the tensor group."""
    max_batch: np.ndarray
    prefill_chunk: np.ndarray
    devices: np.ndarray
    cost_usd_h: FloatArray
    power_idle_w: FloatArray
    power_busy_w: FloatArray
    goodput_rps: FloatArray
    """Shape (candidates, buckets): highest rate per replica meeting the bucket's SLO."""
    binding: np.ndarray
    """Shape (candidates, buckets): what limits the goodput ("capacity", an SLO term,
    "memory")."""
    ttft_p99_s: FloatArray
    tpot_p99_s: FloatArray
    grid_size: int
    """Candidates on the grid before masking."""
    fitting: int
    """Candidates whose shapes split and whose weights fit."""
    pairs_screened: int
    pairs_evaluated: int
    floor: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Per bucket: the smallest worst-objective ratio any fitting candidate reaches alone
    (latency / bound, > 1 means the SLO cannot be met) and that objective."""

    def __len__(self) -> int:
        return int(self.tp.size)


def grid(family: Family, space: SearchSpace) -> dict[str, np.ndarray]:
    """The grid's axes flattened to one row per candidate, shapes the model cannot split,
    formats the chip cannot run and groups wider than allowed left out."""
    acc, arch = family.device.accelerator, family.arch
    engine = family.device.engine
    chunks = space.prefill_chunk or (engine.max_tokens_per_step,)
    rows: list[tuple[str, int, int, int, int]] = []
    for prec, tp, pp in itertools.product(space.precisions, space.tp, space.pp):
        if not acc.runs(prec) or tp * pp > family.max_devices:
            continue
        if tp > family.scale_up_domain and not space.allow_cross_node_tp:
            continue
        eps = space.ep if space.ep is not None else ((1, tp) if arch.moe else (1,))
        adps = space.attention_dp if space.attention_dp is not None else \
            (int(default_attention_dp(arch, family.device, tp)),)
        rows.extend((prec, tp, pp, ep, adp) for ep in sorted(set(eps))
                    for adp in sorted(set(adps)))
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return {"precision": np.zeros(0, dtype=object), "tp": empty, "pp": empty,
                "ep": empty, "attn_dp": empty, "max_batch": empty, "prefill_chunk": empty}
    prec_a = np.array([r[0] for r in rows], dtype=object)
    tp_a, pp_a, ep_a, adp_a = (np.array([r[k] for r in rows], dtype=np.int64)
                               for k in (1, 2, 3, 4))
    # Attention groups that do not divide a row's TP width (or split the heads unevenly)
    # are left out with the shapes the model cannot split.
    keep = parallel_fits(arch, tp_a, pp_a, ep_a, adp_a)
    base = np.flatnonzero(keep)
    idx, mb, ch = (a.ravel() for a in np.meshgrid(base, np.asarray(space.max_batch),
                                                   np.asarray(chunks), indexing="ij"))
    return {"precision": prec_a[idx], "tp": tp_a[idx], "pp": pp_a[idx], "ep": ep_a[idx],
            "attn_dp": adp_a[idx], "max_batch": mb.astype(np.int64),
            "prefill_chunk": ch.astype(np.int64)}


def _floor_ratio(slo: Slo, output_len: Lengths, ttft_at: dict[str, FloatArray],
                 tpot_mean: FloatArray) -> tuple[FloatArray, np.ndarray]:
    """The worst ratio of one request's own latency (no queueing, no other requests) to each
    objective: a lower bound on what it sees under load. Arrays over candidates and buckets
    that share the objectives `slo` (`output_len` over those buckets)."""
    ratios, names = [], []
    o = output_len
    for metric, pct, bound in slo.items():
        if metric == "ttft":
            value = ttft_at[pct]
        elif metric == "tpot":
            value = tpot_mean
        else:
            value = ttft_at[pct] + np.maximum(o.quantile(QUANTILES[pct]) - 1.0, 0.0) \
                * tpot_mean
        ratios.append(value / bound)
        names.append(f"{metric}_{pct}")
    if not ratios:
        return np.zeros_like(tpot_mean), np.full(tpot_mean.shape, "none", dtype=object)
    stack = np.stack(np.broadcast_arrays(*ratios))
    worst = np.argmax(stack, axis=0)
    return np.max(stack, axis=0), np.asarray(names, dtype=object)[worst]


@dataclass(frozen=True)
class Screen:
    """The whole grid of one family on every bucket, by roofline bounds only."""

    grid: dict[str, np.ndarray]
    """Axes of the fitting replicas, one row each, at the largest batch limit listed."""
    grid_size: int
    fitting: int
    """Rows of the grid (all batch limits) whose shapes split and whose weights fit."""
    devices: FloatArray
    cost_usd_h: FloatArray
    floor: FloatArray
    """(candidates, buckets): worst latency / objective of one request alone (> 1: the SLO
    cannot be met whatever the load)."""
    floor_term: np.ndarray
    score: FloatArray
    """(candidates, buckets): cost per request/s of throughput limit without a batch limit,
    for ranking (inf where the floor or memory rules the candidate out)."""

    @property
    def pairs(self) -> int:
        return int(self.floor.size)


def replica_of(family: Family, rows: Mapping[str, Any]) -> Replica:
    """The family's replicas of grid rows `rows` (arrays, which broadcast as given, or one
    row's values): their format, parallelism and prefill chunk (the batch limit is not the
    replica's)."""
    return build_replica(family.arch, family.device, tp=rows["tp"], pp=rows["pp"],
                         ep=rows["ep"], attn_dp=rows["attn_dp"],
                         weight_precision=rows["precision"],
                         tokens_per_step=rows["prefill_chunk"])


def _replica(family: Family, rows: dict[str, np.ndarray]) -> Replica:
    """The family's replicas of the grid rows `rows`, one per row along axis 0 (shape
    (rows, 1), to broadcast against buckets along axis 1)."""
    return replica_of(family, {k: v[:, np.newaxis] for k, v in rows.items()})


REPLICA_AXES = ("precision", "tp", "pp", "ep", "attn_dp", "prefill_chunk")
"""The grid axes that make a replica (its memory plan and step times; the batch limit does
not)."""


def row_key(g: Mapping[str, np.ndarray], axes: tuple[str, ...]) -> np.ndarray:
    """One integer per row of the grid rows `g`, equal for rows alike on `axes`."""
    codes, sizes = [], []
    for axis in axes:
        values, code = np.unique(g[axis].astype(str) if axis == "precision" else g[axis],
                                 return_inverse=True)
        codes.append(code.reshape(-1))
        sizes.append(max(values.size, 1))
    return np.asarray(np.ravel_multi_index(codes, sizes), dtype=np.int64)


def _replica_shapes(g: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The grid's distinct replicas (`REPLICA_AXES`): the first row of each, and which of
    them each row is."""
    _keys, first, which = np.unique(row_key(g, REPLICA_AXES), return_index=True,
                                    return_inverse=True)
    return first, which.reshape(-1)


def screen(family: Family, buckets: list[BucketLoad], space: SearchSpace) -> Screen:
    """Mask the family's whole grid and rank its distinct replicas on every bucket in a few
    vectorised passes (the batch limit, settled by dominance, is not ranked: see the module's
    docstring)."""
    g = grid(family, space)
    n_grid = int(g["tp"].size)
    first, which = _replica_shapes(g)
    fits_shape = np.broadcast_to(_replica(family, {k: v[first] for k, v in g.items()})
                                 .memory.fits, (first.size, 1))[:, 0]
    n_fitting_rows = int(np.count_nonzero(fits_shape[which]))
    # One row per fitting replica, at the largest limit listed.
    g = {k: v[first[fits_shape]] for k, v in g.items()}
    g["max_batch"] = np.full(g["tp"].shape, max(space.max_batch), dtype=np.int64)
    n_fit = int(g["tp"].size)
    nb = len(buckets)
    if n_fit == 0 or not buckets:
        none = np.zeros((n_fit, nb))
        return Screen(g, n_grid, n_fitting_rows, np.zeros(n_fit), np.zeros(n_fit),
                      none + np.inf, np.full((n_fit, nb), "memory", dtype=object),
                      none + np.inf)
    devices = (g["tp"] * g["pp"]).astype(float)
    cost = devices * family.price_usd_h

    # ---- One request alone, per distinct replica: its TTFT at each percentile's prompt and,
    # for every TPOT percentile, the median prompt's decode step; the worst latency over
    # objective it reaches is a floor under load. Percentiles and buckets with the same
    # lengths (fixed lengths have one prompt for every percentile) share one evaluation.
    i_len = Lengths(np.array([float(b.load.input_len.mean) for b in buckets]),
                    np.array([float(b.load.input_len.cv) for b in buckets]))
    o_mean = np.array([b.load.output_len.mean for b in buckets], dtype=float)[np.newaxis]
    hit = np.array([b.load.prefix_hit for b in buckets], dtype=float)[np.newaxis]
    prompts = np.stack([np.maximum(i_len.quantile(q) * (1 - hit[0]), 1.0)
                        for q in QUANTILES.values()])                      # (percentiles, nb)
    lengths = np.stack([prompts, np.broadcast_to(o_mean, prompts.shape)]).reshape(2, -1)
    distinct, inverse = np.unique(lengths, axis=1, return_inverse=True)
    replicas = _replica(family, g)
    alone = static(replicas, batch=1, input_len=distinct[0][np.newaxis],
                   output_len=distinct[1][np.newaxis])
    at = inverse.reshape(prompts.shape)
    ttft_at = {pct: alone.ttft_s[:, at[k]] for k, pct in enumerate(QUANTILES)}
    tpot_alone = alone.tpot_s[:, at[list(QUANTILES).index("p50")]]
    floor = np.empty((n_fit, nb))
    floor_term = np.empty((n_fit, nb), dtype=object)
    by_slo: dict[Slo, list[int]] = {}
    for k, b in enumerate(buckets):
        by_slo.setdefault(b.slo, []).append(k)
    for slo, ks in by_slo.items():
        o_len = Lengths(np.array([float(buckets[k].load.output_len.mean) for k in ks]),
                        np.array([float(buckets[k].load.output_len.cv) for k in ks]))
        floor[:, ks], floor_term[:, ks] = _floor_ratio(
            slo, o_len, {p: v[:, ks] for p, v in ttft_at.items()}, tpot_alone[:, ks])

    # ---- The throughput limit, per replica: the KV cache and the token budget keep it full
    # (no batch limit, so that the limits listed do not move the ranking), or, under a TPOT
    # objective the full batch misses, about the largest batch whose step meets it (the step
    # grows with the batch).
    inputs = {"input_len": np.maximum(i_len.mean[np.newaxis] * (1 - hit), 1.0),
              "output_len": o_mean, "prefill_chunk": g["prefill_chunk"][:, np.newaxis]}
    full = max_throughput(replicas, max_batch=np.inf, **inputs)
    tpot_bound = np.array([min((bound for m, _p, bound in b.slo.items() if m == "tpot"),
                               default=np.inf) for b in buckets])
    over = full.feasible & (full.tpot_s > tpot_bound)
    rate = full.output_tok_s_total
    if np.any(over):
        # Regula falsi between one sequence and the full batch: the step is nearly affine in
        # the batch, so a few steps rank as well as a bisection to the last sequence would.
        pp = g["pp"].astype(float)[:, np.newaxis]
        one = max_throughput(replicas, max_batch=1.0 / pp, **inputs)
        lo, hi = np.ones(full.batch.shape), np.maximum(full.batch, 1.0)
        t_lo, t_hi = one.tpot_s, full.tpot_s
        rate_lo = one.output_tok_s_total
        for _ in range(SCREEN_BATCH_STEPS):
            # Buckets without a TPOT objective give inf / inf here; only rows `over` it are
            # read.
            with np.errstate(invalid="ignore"):
                frac = (tpot_bound - t_lo) / np.where(t_hi > t_lo, t_hi - t_lo, np.inf)
            mid = np.clip(np.floor(lo + np.clip(frac, 0.0, 1.0) * (hi - lo)), lo, hi)
            est = max_throughput(replicas, max_batch=mid / pp, **inputs)
            meets = est.tpot_s <= tpot_bound
            lo, t_lo = np.where(meets, mid, lo), np.where(meets, est.tpot_s, t_lo)
            rate_lo = np.where(meets, est.output_tok_s_total, rate_lo)
            hi, t_hi = np.where(meets, hi, mid), np.where(meets, t_hi, est.tpot_s)
        rate = np.where(over, rate_lo, rate)
    cap = np.where(full.feasible, rate / o_mean, 0.0)
    ok = (floor <= 1.0) & (cap > 0)
    score = np.where(ok, cost[:, np.newaxis] / np.maximum(cap, 1e-300), np.inf)

    return Screen(g, n_grid, n_fitting_rows, devices, cost, floor, floor_term, score)


def shortlist(score: FloatArray, devices: FloatArray, chunk: np.ndarray, few: int) -> np.ndarray:
    """The rows (ascending) that get the exact serving model: per bucket (column of `score`,
    lower is better, inf ruled out) and per prefill chunk, the best `few` by score and the best
    of each replica size (`devices`; small replicas round an integer plan up by less).

    Per chunk, because the screen cannot rank chunks against each other: its throughput limit
    spreads the prompt tokens evenly over the steps and its floors price one request alone, so
    a chunk's size enters neither (beyond the token budget's cap on the batch). What the size
    does, the queueing model alone sees: a step that carries a big chunk stretches the TPOT of
    every sequence decoding in it, and a small one splits a prompt over more steps. Rows that
    differ only in their chunk thus tie or nearly tie in the screen, and a shared shortlist
    would fill with copies of one configuration. Ranked per chunk, a grid with more chunks
    shortlists a superset of what any subset of its chunks gets, so listing more chunks
    cannot raise the cost of a plan the mix proves optimal."""
    rows = np.arange(score.shape[0])
    chosen: set[int] = set()
    for value in np.unique(chunk):
        mine = rows[chunk == value]
        for k in range(score.shape[1]):
            order = mine[np.lexsort((mine, score[mine, k]))]
            good = order[np.isfinite(score[order, k])]
            chosen.update(good[:few].tolist())
            _sizes, first = np.unique(devices[good], return_index=True)
            chosen.update(good[first].tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def search_family(family: Family, buckets: list[BucketLoad], space: SearchSpace,
                  screened: Screen | None = None) -> Candidates:
    """Screen the family's grid on every bucket (or take `screened`, the `screen` of the same
    arguments), then price the shortlist exactly."""
    sc = screen(family, buckets, space) if screened is None else screened
    g, n_grid, devices, cost = sc.grid, sc.grid_size, sc.devices, sc.cost_usd_h
    floor, floor_term, score = sc.floor, sc.floor_term, sc.score
    n_fit = int(g["tp"].size)
    if n_fit == 0 or not buckets:
        return _empty(family, sc.fitting, n_grid, buckets)

    keep = shortlist(score, devices, g["prefill_chunk"], space.shortlist)
    floors = {b.name: (float(np.min(floor[:, k])), str(floor_term[np.argmin(floor[:, k]), k]))
              for k, b in enumerate(buckets)}
    sel = {k: v[keep] for k, v in g.items()}
    n_keep = keep.size
    gp = np.zeros((n_keep, len(buckets)))
    binding = np.full((n_keep, len(buckets)), "slo", dtype=object)
    ttft99 = np.full((n_keep, len(buckets)), np.nan)
    tpot99 = np.full((n_keep, len(buckets)), np.nan)
    if n_keep:
        # ---- Exact: goodput for every shortlisted candidate on every bucket.
        for slo, c_idx, b_idx, pair_rep, load in exact_passes(family, sel, buckets, n_keep):
            rate, bind, at = goodput(pair_rep, load, slo, max_batch=sel["max_batch"][c_idx],
                                     token_budget=sel["prefill_chunk"][c_idx],
                                     iterations=GOODPUT_ITERATIONS)
            gp[c_idx, b_idx] = rate
            binding[c_idx, b_idx] = bind
            ttft99[c_idx, b_idx] = np.where(rate > 0, at.ttft.p99, np.nan)
            tpot99[c_idx, b_idx] = np.where(rate > 0, at.tpot.p99, np.nan)
    busy = busy_power(family, sel, buckets)
    return Candidates(
        family, sel["precision"], sel["tp"], sel["pp"], sel["ep"], sel["attn_dp"],
        sel["max_batch"], sel["prefill_chunk"], devices[keep], cost[keep],
        idle_power(family, devices[keep]), busy, gp, binding, ttft99, tpot99, n_grid,
        sc.fitting, n_fit * len(buckets), n_keep * len(buckets), floors)


def rows_at_limits(row: dict[str, object], limits: list[int]) -> dict[str, np.ndarray]:
    """Grid rows of one replica (`row`'s precision, tp, pp, ep, attn_dp and prefill_chunk),
    one per batch limit of `limits`."""
    sel = {k: np.repeat(np.asarray([row[k]], dtype=object if k == "precision" else np.int64),
                        len(limits))
           for k in REPLICA_AXES}
    sel["max_batch"] = np.asarray(limits, dtype=np.int64)
    return sel


def goodput_of_rows(family: Family, sel: dict[str, np.ndarray],
                    buckets: list[BucketLoad]) -> FloatArray:
    """(rows, buckets): the exact goodput (requests/s per replica) of grid rows `sel` (arrays
    of precision, tp, pp, ep, max_batch and prefill_chunk), in one pass per objective set."""
    rows = int(sel["tp"].size)
    gp = np.zeros((rows, len(buckets)))
    for slo, c_idx, b_idx, rep, load in exact_passes(family, sel, buckets, rows):
        gp[c_idx, b_idx] = goodput(rep, load, slo, max_batch=sel["max_batch"][c_idx],
                                   token_budget=sel["prefill_chunk"][c_idx],
                                   iterations=GOODPUT_ITERATIONS)[0]
    return gp


def exact_passes(family: Family, sel: dict[str, np.ndarray], buckets: list[BucketLoad],
                 rows: int) -> Iterator[tuple[Slo, np.ndarray, np.ndarray, Replica, Workload]]:
    """The pairs of `rows` selected grid rows and every bucket, one pass per distinct
    objective set and arrival process (buckets of one workload share them): the objectives,
    each pair's row and bucket index, the pairs' replicas and their stacked loads."""
    by_slo: dict[tuple[Slo, float, float], list[int]] = {}
    for k, b in enumerate(buckets):
        by_slo.setdefault((b.slo, b.load.arrival_cv, b.load.prefix_hit), []).append(k)
    for (slo, _cv, _hit), ks in by_slo.items():
        r_idx, b_idx = (a.ravel() for a in np.meshgrid(np.arange(rows), ks, indexing="ij"))
        rep = replica_of(family, {k: v[r_idx] for k, v in sel.items()})
        yield slo, r_idx, b_idx, rep, stack_loads([buckets[k].load for k in b_idx])


def stack_loads(loads: list[Workload]) -> Workload:
    """One workload whose arrays run over the given buckets (which share their arrival process
    and prefix hit rate)."""
    first = loads[0]
    return Workload(np.ones(len(loads)),
                    Lengths(np.array([float(w.input_len.mean) for w in loads]),
                            np.array([float(w.input_len.cv) for w in loads])),
                    Lengths(np.array([float(w.output_len.mean) for w in loads]),
                            np.array([float(w.output_len.cv) for w in loads])),
                    first.arrival_cv, first.prefix_hit)


def idle_power(family: Family, devices: FloatArray) -> FloatArray:
    """Power of a replica between requests (W): static power on chips with an energy model, a
    fixed share of the power limit on the others; nan where neither is known."""
    acc = family.device.accelerator
    if acc.energy is not None:
        per = acc.energy.static_power_w
    elif acc.tdp_w is not None:
        per = acc.tdp_w * IDLE_POWER_FRACTION
    else:
        per = math.nan
    return np.asarray(devices * per, dtype=float)


def busy_power(family: Family, sel: dict[str, np.ndarray], buckets: list[BucketLoad]) \
        -> FloatArray:
    """Power of a replica running flat out (W): joules per token times tokens per second at
    its throughput limit, averaged over the buckets."""
    if sel["tp"].size == 0:
        return np.zeros(0)
    rep = _replica(family, sel)
    i_mean = np.array([b.load.input_len.mean for b in buckets], dtype=float)[np.newaxis]
    o_mean = np.array([b.load.output_len.mean for b in buckets], dtype=float)[np.newaxis]
    est = max_throughput(rep, input_len=i_mean, output_len=o_mean,
                         max_batch=sel["max_batch"][:, np.newaxis],
                         prefill_chunk=sel["prefill_chunk"][:, np.newaxis])
    watts = est.energy_j_per_token * est.output_tok_s_total
    return np.asarray(np.mean(np.where(np.isfinite(watts), watts, np.nan), axis=1), dtype=float)


def _empty(family: Family, fitting: int, n_grid: int, buckets: list[BucketLoad]) -> Candidates:
    none = np.zeros(0, dtype=np.int64)
    nb = len(buckets)
    return Candidates(family, np.zeros(0, dtype=object), none, none, none, none, none, none,
                      np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, nb)),
                      np.zeros((0, nb), dtype=object), np.zeros((0, nb)), np.zeros((0, nb)),
                      n_grid, fitting, 0, 0,
                      {b.name: (math.inf, "memory") for b in buckets})


def pareto(cost: FloatArray, latency: FloatArray) -> BoolArray:
    """Points no other point beats on both cost and latency (ties kept once, the first)."""
    order = np.lexsort((np.arange(cost.size), latency, cost))
    keep = np.zeros(cost.size, dtype=bool)
    best = math.inf
    for j in order:
        if np.isfinite(cost[j]) and np.isfinite(latency[j]) and latency[j] < best:
            keep[j] = True
            best = float(latency[j])
    return keep
