"""Placing model replicas onto nodes of one accelerator type, with as few nodes as possible.

A replica of a kind with tensor parallelism `tp` and `pp` pipeline stages is `pp` TP groups of
`tp` accelerators. A TP group needs the fast link, so it lies within one node; a group larger
than a node takes ceil(tp / accelerators_per_node) whole nodes of one scale-up domain (NVLink
across nodes, as in GB200 NVL72), or of any domains when the caller allows cross-domain TP.
Pipeline stages talk over the NICs and may go anywhere.

Groups larger than a node cost a fixed number of nodes. The groups that fit in a node are a bin
packing problem with few distinct sizes, solved in this order:

1. first-fit-decreasing; when it meets the counting lower bound it is optimal, proven by the
   bound (always the case when every size is a power of two dividing the node);
2. otherwise an exact ILP over node patterns (how many nodes hold each multiset of group sizes
   that fits in a node), while the patterns are few;
3. otherwise, for a few dozen groups, an assignment ILP (group -> node);
4. otherwise first-fit-decreasing stands, reported as feasible with its gap to the bound.

Units: accelerators (counts) and nodes (counts); times in seconds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .milp import SolveFacts, SolveStatus, solve

FFD = "first-fit-decreasing"
MAX_PATTERNS = 5000
"""The pattern ILP is used while the node patterns number at most this many."""
MAX_PATTERN_VISITS = 200_000
"""Enumerating patterns stops (and the pattern ILP is skipped) after this many search steps."""
MAX_ASSIGNMENT_ITEMS = 60
"""The assignment ILP (groups x nodes binaries) is used up to this many TP groups."""


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class ReplicaKind:
    """`count` replicas, each `pp` pipeline stages of one TP group of `tp` accelerators."""

    name: str
    tp: int
    """Tensor-parallel group size (accelerators)."""
    pp: int
    """Pipeline stages (TP groups per replica)."""
    count: int
    """Replicas of this kind; 0 places nothing."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"replica kind name must be a non-empty string, got {self.name!r}")
        for field in ("tp", "pp"):
            value = getattr(self, field)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{self.name}: {field} must be an integer >= 1, got {value!r}")
        if not _is_int(self.count) or self.count < 0:
            raise ValueError(f"{self.name}: count must be an integer >= 0, got {self.count!r}")

    @property
    def groups(self) -> int:
        """TP groups to place (pp per replica)."""
        return self.pp * self.count

    @property
    def accelerators(self) -> int:
        """Accelerators the kind needs in all (tp * pp * count)."""
        return self.tp * self.groups


@dataclass(frozen=True)
class PackingProblem:
    """Replicas to place on nodes of one accelerator type."""

    accelerators_per_node: int
    scale_up_domain: int
    """Accelerators sharing the fast link: 1 (PCIe cards), up to a node, or a multiple of a
    node (NVL72: 72 accelerators over 18 nodes of 4)."""
    items: tuple[ReplicaKind, ...]
    allow_cross_domain_tp: bool = False
    """Let a TP group larger than the scale-up domain span whole nodes of several domains."""
    time_limit_s: float = 5.0
    """Wall-clock limit for each ILP solve (s)."""

    def __post_init__(self) -> None:
        apn, domain = self.accelerators_per_node, self.scale_up_domain
        if not _is_int(apn) or apn < 1:
            raise ValueError(f"accelerators_per_node must be an integer >= 1, got {apn!r}")
        if not _is_int(domain) or domain < 1:
            raise ValueError(f"scale_up_domain must be an integer >= 1, got {domain!r}")
        if domain > apn and domain % apn:
            raise ValueError(f"a scale-up domain larger than a node is made of whole nodes: "
                             f"{domain} is not a multiple of {apn}")
        # A list is as good as a tuple here; store a tuple so that the problem stays hashable.
        object.__setattr__(self, "items", tuple(self.items))
        names = [kind.name for kind in self.items if isinstance(kind, ReplicaKind)]
        if len(names) != len(self.items):
            raise ValueError("items must be ReplicaKind objects")
        duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
        if duplicates:
            raise ValueError(f"replica kind names must be unique: {', '.join(duplicates)}")
        if not isinstance(self.allow_cross_domain_tp, bool):
            raise ValueError("allow_cross_domain_tp must be a bool")
        limit = self.time_limit_s
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not (
                math.isfinite(limit) and limit > 0):
            raise ValueError(f"time_limit_s must be a positive number of seconds, got {limit!r}")

    def nodes_per_group(self, kind: ReplicaKind) -> int:
        """Nodes one TP group of `kind` spans: 1 when it fits in a node, else whole nodes."""
        return -(-kind.tp // self.accelerators_per_node)

    def infeasibility(self) -> str:
        """Why no placement exists ('' when one does)."""
        reasons = [f"{kind.name}: tp {kind.tp} exceeds the scale-up domain of "
                   f"{self.scale_up_domain} accelerators"
                   for kind in sorted(self.items, key=lambda k: k.name)
                   if kind.count > 0 and kind.tp > self.accelerators_per_node
                   and kind.tp > self.scale_up_domain and not self.allow_cross_domain_tp]
        return "; ".join(reasons)


@dataclass(frozen=True)
class Placement:
    """Where the replicas go, and how sure the solver is that no fewer nodes would do."""

    nodes: int
    lower_bound: int
    """Counting bound (nodes): whole nodes of large TP groups plus the larger of
    ceil(small-group accelerators / node) and the number of groups over half a node.
    `facts.bound` may be tighter (an ILP's proof)."""
    facts: SolveFacts
    """Objective and bound in nodes, for the whole placement."""
    node_contents: tuple[tuple[tuple[str, int], ...], ...]
    """Per node, (replica kind name, accelerators of that kind on it) sorted by name. Nodes of
    TP groups larger than a node come first, each group's nodes consecutive."""
    idle_accelerators: int
    """Free accelerators on the used nodes."""
    feasible: bool
    reason: str = ""
    """Why no placement exists ('' when feasible)."""


def _enumerate_patterns(sizes: Sequence[int], caps: Sequence[int],
                        capacity: int) -> list[tuple[int, ...]] | None:
    """Maximal multisets of `sizes` (at most `caps` of each) that fit in `capacity`, as counts
    per size; None when there are too many. `sizes` are decreasing."""
    # Covering demand with maximal patterns loses nothing: any node's content can be topped up
    # to a maximal pattern and the surplus slots left empty.
    patterns: list[tuple[int, ...]] = []
    counts = [0] * len(sizes)
    visits = 0

    def extend(j: int, free: int) -> bool:
        nonlocal visits
        visits += 1
        if visits > MAX_PATTERN_VISITS:
            return False
        if j == len(sizes):
            if all(counts[i] == caps[i] or sizes[i] > free for i in range(len(sizes))):
                patterns.append(tuple(counts))
            return len(patterns) <= MAX_PATTERNS
        for n in range(min(caps[j], free // sizes[j]), -1, -1):
            counts[j] = n
            if not extend(j + 1, free - n * sizes[j]):
                return False
        counts[j] = 0
        return True

    return patterns if extend(0, capacity) else None


def _first_fit_decreasing(sizes: Sequence[int], demand: Sequence[int],
                          capacity: int) -> list[list[int]]:
    """First-fit-decreasing; each node as counts per size. `sizes` are decreasing."""
    nodes: list[list[int]] = []
    free: list[int] = []
    for j, (size, n) in enumerate(zip(sizes, demand, strict=True)):
        # Identical groups in a row: first fit fills each node in order until it is too full,
        # so one pass over the nodes per size is the same as one search per group.
        left = n
        for b in range(len(nodes)):
            if left == 0:
                break
            take = min(free[b] // size, left)
            nodes[b][j] += take
            free[b] -= take * size
            left -= take
        while left > 0:
            take = min(capacity // size, left)
            row = [0] * len(sizes)
            row[j] = take
            nodes.append(row)
            free.append(capacity - take * size)
            left -= take
    return nodes


def _ceil_bound(bound: float) -> int:
    # The solver's bound carries float noise (2.9999999 is a proof of 3 nodes).
    return math.ceil(bound - 1e-6) if math.isfinite(bound) else 0


def _pattern_ilp(sizes: Sequence[int], demand: Sequence[int], capacity: int,
                 time_limit_s: float) -> tuple[list[list[int]] | None, SolveFacts] | None:
    """Exact ILP: integer count of nodes per pattern. None when the patterns are too many."""
    patterns = _enumerate_patterns(sizes, demand, capacity)
    if patterns is None:
        return None
    import pulp  # here, not at the top: most placements are proven by first-fit-decreasing

    model = pulp.LpProblem("node_patterns", pulp.LpMinimize)
    x = [model.add_variable(f"x_{p}", lowBound=0, cat=pulp.LpInteger)
         for p in range(len(patterns))]
    model += pulp.lpSum(x)
    for j, n in enumerate(demand):
        model += (pulp.lpSum(pat[j] * x[p] for p, pat in enumerate(patterns) if pat[j]) >= n,
                  f"cover_size_{sizes[j]}")
    facts = solve(model, time_limit_s=time_limit_s)
    if facts.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return None, facts
    nodes = [list(pat) for p, pat in enumerate(patterns)
             for _ in range(round(x[p].value() or 0.0))]
    # Patterns may over-cover; empty the surplus slots from the last nodes backwards.
    for j, n in enumerate(demand):
        surplus = sum(node[j] for node in nodes) - n
        for node in reversed(nodes):
            if surplus <= 0:
                break
            drop = min(node[j], surplus)
            node[j] -= drop
            surplus -= drop
    return [node for node in nodes if any(node)], facts


def _assignment_ilp(sizes: Sequence[int], demand: Sequence[int], capacity: int,
                    upper: int, time_limit_s: float) -> tuple[list[list[int]] | None, SolveFacts]:
    """Exact ILP: each group to one of `upper` nodes, nodes used in order."""
    import pulp

    items = [j for j, n in enumerate(demand) for _ in range(n)]  # decreasing sizes
    model = pulp.LpProblem("group_assignment", pulp.LpMinimize)
    y = [model.add_variable(f"y_{k}", cat=pulp.LpBinary) for k in range(upper)]
    # Group i may go only to nodes 0..i: any packing can be renumbered so (symmetry breaking).
    x = {(i, k): model.add_variable(f"x_{i}_{k}", cat=pulp.LpBinary)
         for i in range(len(items)) for k in range(min(i + 1, upper))}
    model += pulp.lpSum(y)
    for i in range(len(items)):
        model += (pulp.lpSum(x[i, k] for k in range(min(i + 1, upper))) == 1, f"place_{i}")
    for k in range(upper):
        members = [i for i in range(len(items)) if (i, k) in x]
        model += (pulp.lpSum(sizes[items[i]] * x[i, k] for i in members) <= capacity * y[k],
                  f"capacity_{k}")
        for i in members:
            model += x[i, k] <= y[k]
        if k + 1 < upper:
            model += y[k] >= y[k + 1]
    facts = solve(model, time_limit_s=time_limit_s)
    if facts.status not in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE):
        return None, facts
    nodes = [[0] * len(sizes) for _ in range(upper)]
    for (i, k), var in x.items():
        if round(var.value() or 0.0):
            nodes[k][items[i]] += 1
    return [node for node in nodes if any(node)], facts


def _counting_bound(sizes: Sequence[int], demand: Sequence[int], capacity: int) -> int:
    """Lower bound (nodes) for groups that fit in a node: by accelerators, and by groups over
    half a node (no two share one)."""
    total = sum(s * n for s, n in zip(sizes, demand, strict=True))
    over_half = sum(n for s, n in zip(sizes, demand, strict=True) if 2 * s > capacity)
    return max(-(-total // capacity), over_half)


def _fill(nodes: Sequence[Sequence[int]], sizes: Sequence[int],
          kinds: Sequence[ReplicaKind]) -> list[Counter[str]]:
    """Name the groups in each node's slots (accelerators per kind), kinds in the given order."""
    out: list[Counter[str]] = []
    queues = {s: [k for k in kinds if k.tp == s] for s in sizes}
    left = {k.name: k.groups for k in kinds}
    for node in nodes:
        here: Counter[str] = Counter()
        for size, slots in zip(sizes, node, strict=True):
            queue, open_slots = queues[size], slots
            while open_slots:
                kind = queue[0]
                take = min(open_slots, left[kind.name])
                here[kind.name] += take * size
                open_slots -= take
                left[kind.name] -= take
                if not left[kind.name]:
                    queue.pop(0)
        out.append(here)
    return out


def _small_nodes(sizes: Sequence[int], demand: Sequence[int], capacity: int,
                 time_limit_s: float) -> tuple[list[list[int]], int, str]:
    """Pack groups that fit in a node: (nodes as counts per size, proven bound, solver)."""
    bound = _counting_bound(sizes, demand, capacity)
    best = _first_fit_decreasing(sizes, demand, capacity)
    if len(best) <= bound:
        return best, bound, FFD
    solved = _pattern_ilp(sizes, demand, capacity, time_limit_s)
    formulation = "node-pattern ILP"
    if solved is None and sum(demand) <= MAX_ASSIGNMENT_ITEMS:
        solved = _assignment_ilp(sizes, demand, capacity, len(best), time_limit_s)
        formulation = "assignment ILP"
    if solved is None:
        return best, bound, FFD
    nodes, facts = solved
    if nodes is not None and len(nodes) < len(best):
        best = nodes
    # An optimal solve proves its objective even when the float bound is a hair below it.
    proven = len(best) if facts.status is SolveStatus.OPTIMAL else _ceil_bound(facts.bound)
    return best, max(bound, proven), f"{facts.solver}, {formulation}"


def _facts(status: SolveStatus, nodes: float, bound: float, elapsed_s: float,
           solver: str) -> SolveFacts:
    gap = (nodes - bound) / nodes if nodes > 0 and math.isfinite(bound) else 0.0
    if status is SolveStatus.INFEASIBLE:
        gap = math.nan
    return SolveFacts(status, nodes, bound, gap, elapsed_s, solver)


def pack(problem: PackingProblem) -> Placement:
    """Place every replica of `problem` on as few nodes as possible."""
    start = time.perf_counter()
    reason = problem.infeasibility()
    if reason:
        facts = _facts(SolveStatus.INFEASIBLE, math.nan, math.nan,
                       time.perf_counter() - start, FFD)
        return Placement(0, 0, facts, (), 0, feasible=False, reason=reason)
    apn = problem.accelerators_per_node
    # Sorted by name so that the order of `items` changes nothing.
    kinds = sorted((k for k in problem.items if k.groups > 0), key=lambda k: k.name)
    contents: list[tuple[tuple[str, int], ...]] = []
    for kind in kinds:
        span = problem.nodes_per_group(kind)
        if span == 1:
            continue
        # TP shards as evenly as the nodes allow (tp 6 on two nodes of 4: 3 + 3).
        share, extra = divmod(kind.tp, span)
        group = [((kind.name, share + 1 if i < extra else share),) for i in range(span)]
        contents.extend(group * kind.groups)
    big = len(contents)

    sizes = sorted({k.tp for k in kinds if k.tp <= apn}, reverse=True)
    demand = [sum(k.groups for k in kinds if k.tp == s) for s in sizes]
    small, small_bound, solver = (_small_nodes(sizes, demand, apn, problem.time_limit_s)
                                  if sizes else ([], 0, FFD))
    small_contents = [tuple(sorted(here.items())) for here in _fill(small, sizes, kinds)]
    # Fullest nodes first, ties by content: one canonical order whatever the solver returned.
    small_contents.sort(key=lambda node: (-sum(n for _, n in node), node))
    contents.extend(small_contents)

    nodes = len(contents)
    lower = big + _counting_bound(sizes, demand, apn)
    bound = big + small_bound
    status = SolveStatus.OPTIMAL if nodes <= bound else SolveStatus.FEASIBLE
    used = sum(k.accelerators for k in kinds)
    facts = _facts(status, float(nodes), float(bound), time.perf_counter() - start, solver)
    return Placement(nodes, lower, facts, tuple(contents), nodes * apn - used, feasible=True)



def check_placement(problem: PackingProblem, placement: Placement) -> list[str]:
    """Violations of the placement rules, re-derived from `node_contents`; [] when valid.

    Checks: every kind's accelerators placed (tp * pp * count), no node over capacity, each
    TP group that fits a node inside one node (a node holds a multiple of tp of its kind), each
    larger group on whole nodes of its own (consecutive runs of ceil(tp / node) nodes holding
    tp in all) within the scale-up domain unless allowed, and the node and idle counts.
    """
    apn = problem.accelerators_per_node
    reason = problem.infeasibility()
    if not placement.feasible:
        out = [] if reason else ["placement says infeasible but the problem has a placement"]
        if placement.node_contents or placement.nodes:
            out.append("an infeasible placement lists nodes")
        return out
    out = [f"placement says feasible but {reason}"] if reason else []
    contents = placement.node_contents
    kinds = {k.name: k for k in problem.items}
    if placement.nodes != len(contents):
        out.append(f"nodes {placement.nodes} != {len(contents)} nodes listed")
    placed: Counter[str] = Counter()
    holders: dict[str, list[int]] = {}
    for i, node in enumerate(contents):
        names = [name for name, _ in node]
        if len(set(names)) != len(names):
            out.append(f"node {i} lists a kind twice")
        if sum(n for _, n in node) > apn:
            out.append(f"node {i} holds {sum(n for _, n in node)} > {apn} accelerators")
        for name, n in node:
            kind = kinds.get(name)
            if kind is None or n <= 0:
                out.append(f"node {i}: unknown kind or non-positive count {(name, n)}")
                continue
            placed[name] += n
            holders.setdefault(name, []).append(i)
            if kind.tp <= apn and n % kind.tp:
                out.append(f"node {i}: {n} accelerators of {name} is not whole TP groups of "
                           f"{kind.tp}")
            if kind.tp > apn and len(node) > 1:
                out.append(f"node {i}: {name} spans nodes (tp {kind.tp}) but shares node {i}")
    for name, kind in sorted(kinds.items()):
        if placed[name] != kind.accelerators:
            out.append(f"{name}: {placed[name]} accelerators placed, {kind.accelerators} needed")
        if kind.tp <= apn or name not in holders:
            continue
        span = problem.nodes_per_group(kind)
        where = holders[name]
        if len(where) != span * kind.groups:
            out.append(f"{name}: on {len(where)} nodes, {span} per TP group x {kind.groups}")
        for g in range(0, len(where) - span + 1, span):
            run = where[g:g + span]
            if run[-1] - run[0] != span - 1 or sum(
                    dict(contents[i])[name] for i in run) != kind.tp:
                out.append(f"{name}: nodes {run} are not one TP group of {kind.tp}")
        if span * apn > problem.scale_up_domain and not problem.allow_cross_domain_tp:
            out.append(f"{name}: a TP group of {span} nodes exceeds the scale-up domain of "
                       f"{problem.scale_up_domain} accelerators")
    idle = placement.nodes * apn - sum(placed.values())
    if placement.idle_accelerators != idle:
        out.append(f"idle accelerators {placement.idle_accelerators} != {idle}")
    if placement.lower_bound > placement.nodes:
        out.append(f"lower bound {placement.lower_bound} > {placement.nodes} nodes")
    return out
