"""Disaggregated candidates: units of `n_p` prefill and `n_d` decode replicas of one model on one
accelerator type, joined by a KV link, priced like co-located replicas so that the mix ILP
can weigh both.

A unit is a pool ratio from `SearchSpace.pd_ratios` and two rows of the family's grid, one per
pool, that share the weight format and the prefill chunk (the engine's token budget) but may
differ in parallelism (TP, PP, EP; attention data parallelism only in the decode pool, as a
prefill replica runs one prompt at a time, which lies in one attention group): a prompt's
prefill is one long compute-bound step whose time falls with every accelerator added, while
decode streams the weights and KV cache, so the two pools are often best split differently
(DistServe chooses each phase's parallelism apart for this reason). The prefill pool runs its
row's chunk; the decode pool the largest batch limit listed (see `search` on why). A unit
counts n_p x (its prefill replica's tp x pp) + n_d x (its decode replica's tp x pp)
accelerators, which is how the report counts them and the packer places them.

KV link: a unit that fits in one scale-up domain is placed in one (the packer gets it as one
group) and ships KV caches over the scale-up link; a larger one uses the NICs. Each of a
replica's tp x pp accelerators sends (or takes) its own shard of the cache over its own link,
so the link carries as many times one accelerator's bandwidth as the smaller of the two
replicas has accelerators.

The search is screened first, like `search.search_family`: for every fitting row and bucket,
the prefill pool's service time per prompt and the decode pool's throughput at the largest
batch whose step meets the TPOT objective give each (prefill row, decode row, ratio)'s
capacity and cost per request/s; the best units per bucket, and the best of each unit size,
then get the exact goodput through `models.disaggregation.goodput_disaggregated`. The mix
gets, per bucket, the best of those by exact cost per request/s and the best of each smaller
unit size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..models.arrays import BoolArray, FloatArray
from ..models.disaggregation import KvLink, Pools, decode_step, goodput_disaggregated
from ..models.inference import Replica
from ..models.queueing import QUANTILES, Slo, Workload
from .search import (
    GOODPUT_ITERATIONS,
    REPLICA_AXES,
    BucketLoad,
    Family,
    Screen,
    SearchSpace,
    busy_power,
    exact_passes,
    idle_power,
    replica_of,
    row_key,
    rows_at_limits,
    stack_loads,
)

SCALE_UP = "scale-up"
SCALE_OUT = "scale-out"
# Bisection steps for the largest decode batch whose step meets the TPOT objective, in the
# screen (a ranking, so 1/256 of the slots is fine).
_BATCH_STEPS = 8


@dataclass(frozen=True)
class Units:
    """The evaluated disaggregated units of one family, one row each, with goodput per
    bucket."""

    family: Family
    precision: np.ndarray
    tp: np.ndarray
    """The decode replicas' tensor-parallel width (so pp and ep: the decode pool's)."""
    pp: np.ndarray
    ep: np.ndarray
    attn_dp: np.ndarray
    """Attention data-parallel groups inside each decode replica's tensor group (a prefill
    replica runs one prompt at a time, with attention over its whole group)."""
    prefill_tp: np.ndarray
    """The prefill replicas' parallelism."""
    prefill_pp: np.ndarray
    prefill_ep: np.ndarray
    max_batch: np.ndarray
    """Batch limit of each decode replica."""
    prefill_chunk: np.ndarray
    """Token budget of each prefill step."""
    n_prefill: np.ndarray
    n_decode: np.ndarray
    devices: np.ndarray
    """Accelerators per unit: n_prefill x prefill_tp x prefill_pp + n_decode x tp x pp."""
    cost_usd_h: FloatArray
    power_idle_w: FloatArray
    power_busy_w: FloatArray
    kv_path: np.ndarray
    """"scale-up" or "scale-out": the link the unit's KV caches take."""
    kv_bandwidth_bytes_s: FloatArray
    kv_latency_s: FloatArray
    kv_efficiency: float
    goodput_rps: FloatArray
    """(units, buckets): highest rate per unit (over both pools) meeting the bucket's SLO."""
    binding: np.ndarray
    ttft_p99_s: FloatArray
    tpot_p99_s: FloatArray
    pairs_screened: int
    """(prefill row, decode row, ratio, bucket) combinations the screen ranked."""
    pairs_evaluated: int
    """(unit, bucket) pairs priced by the serving model."""
    ratios: tuple[tuple[int, int], ...]
    """The (prefill, decode) ratios searched."""

    def __len__(self) -> int:
        return int(self.tp.size)

    def link(self, j: int) -> KvLink:
        return KvLink(float(self.kv_bandwidth_bytes_s[j]), float(self.kv_latency_s[j]),
                      self.kv_efficiency)


def kv_links(family: Family, unit_devices: np.ndarray, replica_devices: np.ndarray
             ) -> tuple[np.ndarray, FloatArray, FloatArray]:
    """The KV path of units of `unit_devices` accelerators whose smaller replica (prefill or
    decode) has `replica_devices`: the scale-up link when the unit fits in one scale-up
    domain, else the NICs; bytes/s over that replica's accelerators together, and one-way
    seconds."""
    fabric = family.device.fabric
    inside = np.asarray(unit_devices) <= family.scale_up_domain
    lanes = np.asarray(replica_devices, dtype=float)
    bw = np.where(inside, fabric.up_bw_bytes_s, fabric.out_bw_bytes_s) * lanes
    lat = np.where(inside, fabric.up_latency_s, fabric.out_latency_s).astype(float)
    path = np.where(inside, SCALE_UP, SCALE_OUT).astype(object)
    return path, bw, lat


def _tpot_bound(slo: Slo) -> float:
    """The tightest TPOT objective (s); inf when none is set."""
    return min((bound for metric, _p, bound in slo.items() if metric == "tpot"),
               default=np.inf)


def _ttft_alone_meets(pools: Pools, buckets: list[BucketLoad]) -> BoolArray:
    """(rows, buckets): whether a prompt alone on a prefill replica, at each TTFT objective's
    percentile of the prompt lengths, meets that objective (a floor: queueing only adds)."""
    names = list(QUANTILES)
    t_at = np.broadcast_to(pools.t_at, (len(names), *np.broadcast_shapes(
        np.shape(pools.t_at)[1:], np.shape(pools.s_p))))
    meets = np.ones(t_at.shape[1:], dtype=bool)
    for k, b in enumerate(buckets):
        for metric, pct, bound in b.slo.items():
            if metric == "ttft":
                meets[:, k] &= t_at[names.index(pct), :, k] <= bound
    return meets


@dataclass(frozen=True)
class _PoolRates:
    """What the screen knows of each fitting row's replicas as one pool or the other."""

    prefill_rps: FloatArray
    """(rows, buckets): requests/s one prefill replica sustains alone; 0 where its weights do
    not fit or a prompt alone misses a TTFT objective."""
    decode_rps: FloatArray
    """(rows, buckets): requests/s one decode replica sustains at the largest batch whose
    step meets the bucket's tightest TPOT objective; 0 where not even one sequence does."""
    prompt_alone: FloatArray
    """(percentiles, rows, buckets): a prompt alone on a prefill replica, at each of
    `QUANTILES` of the prompt lengths (s)."""
    step_one: FloatArray
    """(rows, buckets): a decode step of one sequence (s)."""


def _pool_rates(family: Family, sc: Screen, buckets: list[BucketLoad]) -> _PoolRates:
    """Each fitting row of `sc` as a prefill and as a decode replica, on every bucket. A
    prefill replica runs one prompt at a time, which lies in one attention group, so it is
    priced with attention over its whole tensor group (attention data parallelism pays for
    the many sequences of a decode batch)."""
    g = sc.grid
    rows, nb = int(g["tp"].size), len(buckets)
    prefill_rps, decode_rps = np.zeros((rows, nb)), np.zeros((rows, nb))
    prompt_alone = np.zeros((len(QUANTILES), rows, nb))
    step_one = np.zeros((rows, nb))
    col = {k: v[:, np.newaxis] for k, v in g.items()}
    rep = replica_of(family, col)
    rep_p = rep if np.all(g["attn_dp"] == 1) else \
        replica_of(family, {**col, "attn_dp": np.ones_like(col["attn_dp"])})
    by_hit: dict[float, list[int]] = {}
    for k, b in enumerate(buckets):
        by_hit.setdefault(b.load.prefix_hit, []).append(k)
    for ks in by_hit.values():
        # The arrival process does not enter a pool's service times.
        load = stack_loads([buckets[k].load for k in ks])
        # No batch limit: the screen ranks replicas as `search.screen` does, whatever limits
        # are listed.
        pools = Pools.of(rep_p, rep, load, n_prefill=1.0, n_decode=1.0,
                         link=KvLink(1.0, 0.0), max_batch=np.inf,
                         token_budget=col["prefill_chunk"])
        bound = np.array([_tpot_bound(buckets[k].slo) for k in ks])
        # The largest batch in [1, slots] whose decode step meets the bound (bisection; the
        # step grows with the batch).
        lo, hi = np.ones_like(pools.slots), pools.slots.copy()
        meets_full = decode_step(rep, hi, pools.ctx) <= bound
        for _ in range(_BATCH_STEPS):
            mid = (lo + hi) / 2.0
            ok = decode_step(rep, mid, pools.ctx) <= bound
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        batch = np.where(meets_full, pools.slots, lo)
        tau = decode_step(rep, batch, pools.ctx)
        one = np.broadcast_to(decode_step(rep, np.ones_like(batch), pools.ctx), (rows, len(ks)))
        prefill_fits = np.broadcast_to(rep_p.memory.fits, (rows, 1))
        decode_fits = np.broadcast_to(rep.memory.fits, (rows, 1))
        prefill_rps[:, ks] = np.where(prefill_fits
                                      & _ttft_alone_meets(pools, [buckets[k] for k in ks]),
                                      1.0 / pools.s_p, 0.0)
        decode_rps[:, ks] = np.where(decode_fits & (one <= bound),
                                     batch / (np.maximum(pools.steps, 1.0) * tau), 0.0)
        prompt_alone[:, :, ks] = np.broadcast_to(pools.t_at, (len(QUANTILES), rows, len(ks)))
        step_one[:, ks] = one
    return _PoolRates(prefill_rps, decode_rps, prompt_alone, step_one)


def _e2e_alone_meets(rates: _PoolRates, p_row: np.ndarray, d_row: np.ndarray,
                     buckets: list[BucketLoad]) -> BoolArray:
    """(pairs, buckets): whether one request alone, its prompt on the pair's prefill row and
    its output on the decode row, meets each end-to-end objective (the KV transfer left out:
    a floor)."""
    names = list(QUANTILES)
    meets = np.ones((p_row.size, len(buckets)), dtype=bool)
    for k, b in enumerate(buckets):
        for metric, pct, bound in b.slo.items():
            if metric != "e2e":
                continue
            tokens = max(float(b.load.output_len.quantile(QUANTILES[pct])) - 1.0, 0.0)
            alone = rates.prompt_alone[names.index(pct), p_row, k] \
                + tokens * rates.step_one[d_row, k]
            meets[:, k] &= alone <= bound
    return meets


def _pairs(g: dict[str, np.ndarray], shared: bool
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prefill row, decode row) of the screened grid `g` that shares the weight format
    and the prefill chunk, ordered by prefill row then decode row, and which of them keep one
    parallelism (TP, PP, EP) for both pools (with `shared`, only those). A prefill replica
    runs without attention data parallelism, so of rows that differ only in it the first
    stands for them all as a prefill row."""
    # Format, TP, PP, EP and prefill chunk: all but the attention groups.
    key = row_key(g, tuple(a for a in REPLICA_AXES if a != "attn_dp"))
    _keys, first = np.unique(key, return_index=True)
    prefill = np.zeros(key.size, dtype=bool)
    prefill[first] = True
    same = prefill[:, np.newaxis] & np.ones((key.size, key.size), dtype=bool)
    for axis in ("precision", "prefill_chunk"):
        same &= g[axis][:, np.newaxis] == g[axis][np.newaxis, :]
    one = key[:, np.newaxis] == key[np.newaxis, :]
    if shared:
        same &= one
    p_row, d_row = np.nonzero(same)
    return p_row, d_row, one[p_row, d_row]


def _best(score: FloatArray, size: np.ndarray, few: int, among: BoolArray) -> set[int]:
    """Rows of `score` (units x buckets, lower is better, inf ruled out) among `among`: per
    bucket the best `few`, and the best of each size (`size`)."""
    out: set[int] = set()
    rows = np.flatnonzero(among)
    for k in range(score.shape[1]):
        order = rows[np.lexsort((rows, score[rows, k]))]
        good = order[np.isfinite(score[order, k])]
        out.update(int(u) for u in good[:few])
        for s in np.unique(size[good]):
            out.add(int(good[size[good] == s][0]))
    return out


def search_units(family: Family, buckets: list[BucketLoad], space: SearchSpace,
                 sc: Screen) -> Units:
    """Disaggregated units of the family: screen every pairing of fitting rows of `sc` (the
    family's `screen`) at every ratio of `space.pd_ratios` on every bucket, then price the
    shortlist exactly."""
    g = sc.grid
    rows, nb = int(g["tp"].size), len(buckets)
    ratios = np.array(space.pd_ratios, dtype=np.int64).reshape(-1, 2)
    p_row, d_row, shared_row = _pairs(g, space.pd_parallelism == "shared")
    n_pairs, n_ratios = int(p_row.size), int(ratios.shape[0])
    if rows == 0 or nb == 0 or ratios.size == 0:
        return _empty(family, nb, n_pairs * n_ratios * nb, space.pd_ratios)
    rates = _pool_rates(family, sc, buckets)
    n_p = ratios[:, 0].astype(float)[np.newaxis, :, np.newaxis]         # (1, ratios, 1)
    n_d = ratios[:, 1].astype(float)[np.newaxis, :, np.newaxis]
    cap = np.minimum(n_p * rates.prefill_rps[p_row][:, np.newaxis],
                     n_d * rates.decode_rps[d_row][:, np.newaxis])       # (pairs, ratios, B)
    cost = (sc.cost_usd_h[p_row][:, np.newaxis, np.newaxis] * n_p
            + sc.cost_usd_h[d_row][:, np.newaxis, np.newaxis] * n_d)
    # Each pool's own floor is in its rate (a prompt alone meets the TTFT objectives; one
    # sequence decodes within the TPOT objective); the pair's is one request's end to end.
    ok = (cap > 0) & _e2e_alone_meets(rates, p_row, d_row, buckets)[:, np.newaxis]
    score = np.where(ok, cost / np.maximum(cap, 1e-300), np.inf)    # (pairs, ratios, buckets)
    size = (sc.devices[p_row][:, np.newaxis] * ratios[np.newaxis, :, 0]
            + sc.devices[d_row][:, np.newaxis] * ratios[np.newaxis, :, 1]).reshape(-1)

    # ---- Shortlist: per bucket the best few units by score, and the best of each unit size;
    # and those of the units whose pools share one parallelism, so that the exact pass prices
    # whatever `pd_parallelism: shared` would (letting the pools differ cannot drop a unit it
    # keeps).
    flat = score.reshape(n_pairs * n_ratios, nb)
    diagonal = np.repeat(shared_row, n_ratios)
    everything = np.ones(flat.shape[0], dtype=bool)
    chosen = _best(flat, size, space.shortlist, everything) \
        | _best(flat, size, space.shortlist, diagonal)
    keep = np.array(sorted(chosen), dtype=np.int64)
    pair, which = np.divmod(keep, n_ratios)
    row_p, row_d = p_row[pair], d_row[pair]
    sel_p = {k: v[row_p] for k, v in g.items()}
    # A prefill replica runs one prompt at a time: attention over its whole tensor group.
    sel_p["attn_dp"] = np.ones_like(sel_p["attn_dp"])
    sel = {k: v[row_d] for k, v in g.items()}
    u_p, u_d = ratios[which, 0], ratios[which, 1]
    dev_p, dev_d = sc.devices[row_p], sc.devices[row_d]
    devices = (u_p * dev_p + u_d * dev_d).astype(np.int64)
    path, bw, lat = kv_links(family, devices, np.minimum(dev_p, dev_d))
    efficiency = family.device.fabric.efficiency
    n_units = keep.size
    gp = np.zeros((n_units, nb))
    binding = np.full((n_units, nb), "slo", dtype=object)
    ttft99 = np.full((n_units, nb), np.nan)
    tpot99 = np.full((n_units, nb), np.nan)
    if n_units:
        # ---- Exact: goodput of every shortlisted unit on every bucket.
        for slo, u_idx, b_idx, rep_p, rep_d, load in _unit_passes(family, sel_p, sel, buckets,
                                                                  n_units):
            rate, bind, at = goodput_disaggregated(
                rep_p, rep_d, load, slo, n_prefill=u_p[u_idx], n_decode=u_d[u_idx],
                link=KvLink(bw[u_idx], lat[u_idx], efficiency),
                max_batch=sel["max_batch"][u_idx], token_budget=sel["prefill_chunk"][u_idx],
                iterations=GOODPUT_ITERATIONS)
            gp[u_idx, b_idx] = rate
            binding[u_idx, b_idx] = bind
            ttft99[u_idx, b_idx] = np.where(rate > 0, at.ttft.p99, np.nan)
            tpot99[u_idx, b_idx] = np.where(rate > 0, at.tpot.p99, np.nan)
    cost_u = sc.cost_usd_h[row_p] * u_p + sc.cost_usd_h[row_d] * u_d
    # ---- What the mix gets: per bucket the best few by exact cost per request/s, and the best
    # of each smaller unit size (the rest would only lengthen the mix's solve); again also
    # those the units whose pools share one parallelism would give it.
    with np.errstate(divide="ignore"):
        per_rps = np.where(gp > 0, cost_u[:, np.newaxis] / gp, np.inf)
    useful = np.zeros(n_units, dtype=bool)
    for among in (np.ones(n_units, dtype=bool), shared_row[pair]):
        for k in range(nb):
            order = np.lexsort((np.arange(n_units), per_rps[:, k]))
            good = order[among[order] & np.isfinite(per_rps[order, k])]
            useful[good[:space.shortlist]] = True
            if good.size:
                smaller = good[devices[good] < devices[good[0]]]
                for s in np.unique(devices[smaller]):
                    useful[smaller[devices[smaller] == s][0]] = True
    m = np.flatnonzero(useful)
    idle = idle_power(family, devices.astype(float))
    busy = busy_power(family, sel_p, buckets) * u_p + busy_power(family, sel, buckets) * u_d
    return Units(family, sel["precision"][m], sel["tp"][m], sel["pp"][m], sel["ep"][m],
                 sel["attn_dp"][m], sel_p["tp"][m], sel_p["pp"][m], sel_p["ep"][m],
                 sel["max_batch"][m], sel["prefill_chunk"][m], u_p[m], u_d[m], devices[m],
                 cost_u[m], idle[m],
                 busy[m], path[m], bw[m], lat[m], efficiency, gp[m], binding[m], ttft99[m],
                 tpot99[m], int(score.size), n_units * nb, space.pd_ratios)


def _unit_passes(family: Family, sel_p: dict[str, np.ndarray], sel_d: dict[str, np.ndarray],
                 buckets: list[BucketLoad], units: int
                 ) -> Iterator[tuple[Slo, np.ndarray, np.ndarray, Replica, Replica, Workload]]:
    """`exact_passes` for units: per distinct objective set, the pairs' indices, their
    prefill and decode replicas (rows `sel_p` and `sel_d`), and their stacked loads."""
    for (slo, u_idx, b_idx, rep_p, load), (_slo, _u, _b, rep_d, _load) in zip(
            exact_passes(family, sel_p, buckets, units),
            exact_passes(family, sel_d, buckets, units), strict=True):
        yield slo, u_idx, b_idx, rep_p, rep_d, load


def _empty(family: Family, nb: int, screened: int,
           ratios: tuple[tuple[int, int], ...]) -> Units:
    none = np.zeros(0, dtype=np.int64)
    empty = np.zeros(0)
    return Units(family, np.zeros(0, dtype=object), none, none, none, none, none, none, none,
                 none, none, none, none, none, empty, empty, empty, np.zeros(0, dtype=object),
                 empty, empty, family.device.fabric.efficiency, np.zeros((0, nb)),
                 np.zeros((0, nb), dtype=object), np.zeros((0, nb)), np.zeros((0, nb)),
                 screened, 0, ratios)


def unit_goodput_at_limits(family: Family, prefill_row: dict[str, object],
                           decode_row: dict[str, object], n_prefill: int, n_decode: int,
                           link: KvLink, buckets: list[BucketLoad], limits: list[int]
                           ) -> FloatArray:
    """(limits, buckets): the exact goodput (requests/s per unit) of one unit (`n_prefill`
    replicas of the grid row `prefill_row` and `n_decode` of `decode_row`, KV over `link`) at
    each batch limit of `limits` (which holds in the decode pool)."""
    sel_d = rows_at_limits(decode_row, limits)
    sel_p = rows_at_limits(prefill_row, limits)
    gp = np.zeros((len(limits), len(buckets)))
    for slo, u_idx, b_idx, rep_p, rep_d, load in _unit_passes(family, sel_p, sel_d, buckets,
                                                              len(limits)):
        gp[u_idx, b_idx] = goodput_disaggregated(
            rep_p, rep_d, load, slo, n_prefill=n_prefill, n_decode=n_decode, link=link,
            max_batch=sel_d["max_batch"][u_idx], token_budget=sel_d["prefill_chunk"][u_idx],
            iterations=GOODPUT_ITERATIONS)[0]
    return gp
