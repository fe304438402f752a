"""The `fleetplan plan` spec: YAML validated by pydantic, errors located by file, line and field.

A spec names workloads (a model, a request rate, request lengths, latency objectives), a pool
of accelerators that may be used, and options that bound the search. The Mélange-style variant
gives measured capacities per request bucket instead of a model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ..hardware.errors import SpecError
from ..hardware.precision import PRECISIONS
from ..hardware.yamlio import LineDict
from .files import load_yaml_file

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False, description="seconds")]
HOURS_PER_DAY = 24
# Prefill or decode replicas in one disaggregated unit: larger pools are several units.
MAX_POOL_REPLICAS = 8
# Where one pool's replicas balance the other's: (prefill seconds per prompt) x (requests/s of
# a decode replica at the TPOT objective) prefill replicas per decode replica. Over the fitting
# configurations of the shipped examples it runs from about 0.1 (short prompts, 70B chat) to
# 3.4 (16k-token RAG prompts), and a TTFT objective asks for spare prefill replicas on top:
# the defaults span 3:1 to 1:4, each pool at most 4 replicas so that a unit stays small
# enough for the integer plan to round well (larger pools are several units).
DEFAULT_PD_RATIOS = ("3:1", "2:1", "3:2", "1:1", "2:3", "1:2", "1:3", "1:4")
M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LengthDist(_Strict):
    """A token-length distribution: lognormal with this mean and standard deviation, or fixed."""

    dist: Literal["lognormal", "fixed"] = "lognormal"
    mean: Annotated[float, Field(ge=1, allow_inf_nan=False, description="tokens")]
    std: Annotated[float, Field(ge=0, allow_inf_nan=False, description="tokens")] = 0.0

    @model_validator(mode="after")
    def _fixed_has_no_spread(self) -> LengthDist:
        if self.dist == "fixed" and self.std != 0:
            raise ValueError("a fixed length has no std")
        return self


Length = Annotated[int, Field(ge=1, description="tokens")] | LengthDist


class Bucket(_Strict):
    """A slice of a workload's requests with fixed lengths, routed as a unit."""

    input_len: Annotated[int, Field(ge=1, description="prompt tokens")]
    output_len: Annotated[int, Field(ge=1, description="generated tokens")]
    share: Annotated[float, Field(gt=0, le=1, description="fraction of the workload's requests")]


class SloSpec(_Strict):
    """Latency objectives in seconds; each one that is set must hold for every request bucket."""

    ttft_p50_s: Seconds | None = None
    ttft_p90_s: Seconds | None = None
    ttft_p99_s: Seconds | None = None
    tpot_p50_s: Seconds | None = None
    tpot_p90_s: Seconds | None = None
    tpot_p99_s: Seconds | None = None
    e2e_p50_s: Seconds | None = None
    e2e_p90_s: Seconds | None = None
    e2e_p99_s: Seconds | None = None


class WorkloadSpec(_Strict):
    """One stream of requests to one model."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    model: str | None = Field(default=None, description="catalog id or path to a config.json")
    rate_rps: PositiveFloat | None = Field(default=None, description="requests per second")
    rate_profile_rps: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
        default=None, description="requests per second for each hour of the day (24 values); "
        "the fleet is sized for the busiest hour")
    input_len: Length | None = None
    output_len: Length | None = None
    buckets: list[Bucket] | None = None
    slo: SloSpec = SloSpec()
    arrival_cv: PositiveFloat = Field(default=1.0, description="coefficient of variation of "
                                      "inter-arrival times (1 = Poisson, > 1 = bursty)")
    prefix_hit: Annotated[float, Field(ge=0, lt=1)] = 0.0

    @field_validator("rate_profile_rps")
    @classmethod
    def _day(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != HOURS_PER_DAY or max(v) <= 0):
            raise ValueError(f"needs {HOURS_PER_DAY} hourly rates, not all zero")
        return v

    @model_validator(mode="after")
    def _complete(self) -> WorkloadSpec:
        if (self.rate_rps is None) == (self.rate_profile_rps is None):
            raise ValueError("give exactly one of rate_rps and rate_profile_rps")
        if self.buckets is None:
            if self.input_len is None or self.output_len is None:
                raise ValueError("give input_len and output_len, or buckets")
        else:
            if self.input_len is not None or self.output_len is not None:
                raise ValueError("give buckets or input_len/output_len, not both")
            total = sum(b.share for b in self.buckets)
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"bucket shares must sum to 1, got {total:g}")
        return self

    @property
    def peak_rate_rps(self) -> float:
        """The rate the fleet is sized for (requests/s): the busiest hour of a profile."""
        return self.rate_rps if self.rate_rps is not None else max(self.rate_profile_rps or [0])


class PoolEntry(_Strict):
    """An accelerator type that may be used, how many, at what price, in which node shape."""

    accelerator: str
    max_count: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="most accelerators of this type (none = unlimited)")
    price_usd_h: PositiveFloat | None = Field(
        default=None, description="USD per accelerator-hour; overrides the catalog price")
    accelerators_per_node: Annotated[int, Field(ge=1)] | None = None
    scale_up_domain: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="accelerators joined by the scale-up link (NVLink, ...)")


class Capacity(_Strict):
    """A measured capacity: the highest request rate one accelerator of a type sustains at the
    SLO for one request bucket (Mélange's profiling output)."""

    accelerator: str
    input_len: Annotated[int, Field(ge=1)]
    output_len: Annotated[int, Field(ge=1)]
    max_rps: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    workload: str | None = Field(default=None, description="the workload it applies to "
                                 "(needed only when several workloads share a bucket shape)")


IntList = list[Annotated[int, Field(ge=1)]]


def _switch(value: Any) -> Any:
    """YAML 1.1 reads a bare `off` / `on` as a boolean: take it as the word."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


Disaggregation = Annotated[
    Literal["off", "on", "auto"], BeforeValidator(_switch),
    WithJsonSchema({"anyOf": [{"enum": ["off", "on", "auto"], "type": "string"},
                              {"type": "boolean", "description": "YAML's bare off/on"}]})]
PdRatio = Annotated[str, Field(pattern=r"^\s*[0-9]+\s*:\s*[0-9]+\s*$",
                               description="prefill:decode replicas, e.g. 1:2")] \
    | Annotated[list[Annotated[int, Field(ge=1, le=MAX_POOL_REPLICAS)]],
                Field(min_length=2, max_length=2, description="[prefill, decode] replicas")]


class Options(_Strict):
    """Bounds of the search and how to solve."""

    precisions: list[str] = Field(default=["bf16", "fp8"],
                                  description="weight formats to consider")
    tp: IntList = [1, 2, 4, 8]
    pp: IntList = [1, 2, 4]
    ep: IntList | None = Field(default=None, description="expert-parallel degrees for MoE "
                               "models (default: 1 and the whole tensor-parallel group)")
    attention_dp: IntList | None = Field(
        default=None, description="attention data-parallel groups inside the tensor group to "
        "search (each TP width takes those that divide it and the attention heads; 1: "
        "attention over the whole group); default: the engine's choice for the model")
    max_batch: IntList = Field(default=[8, 16, 32, 64, 128, 256, 512], description=(
        "batch limits (sequences per micro-batch); each replica gets the smallest listed "
        "that carries its planned load"))
    prefill_chunk: IntList | None = Field(default=None, description="prefill token budgets "
                                          "per step (default: the engine's)")
    engine: str = "trtllm"
    calibration: str | None = Field(default=None, description="YAML from fleetplan calibrate")
    headroom: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.0, description="fraction of each replica's capacity kept free")
    routing: Literal["split", "whole"] = "split"
    allow_cross_node_tp: bool = False
    shortlist: Annotated[int, Field(ge=1, le=64)] = Field(
        default=6, description="candidates per accelerator type and bucket the mix ILP "
        "chooses among (the best by cost per request/s)")
    time_limit_s: PositiveFloat = 10.0
    disaggregation: Disaggregation = Field(
        default="off", description="prefill/decode disaggregation: off (co-located replicas "
        "only), on (only units of a prefill pool and a decode pool), auto (both compete)")
    pd_parallelism: Literal["independent", "shared"] = Field(
        default="independent", description="a disaggregated unit's pools: independent (the "
        "prefill and decode replicas may differ in tp, pp and ep) or shared (one "
        "parallelism for both, for serving stacks that need it)")
    pd_ratios: Annotated[list[PdRatio], Field(min_length=1)] = Field(
        default=list(DEFAULT_PD_RATIOS), description="prefill:decode replicas a "
        f"disaggregated unit may have, as 'P:D' or [P, D] (each 1-{MAX_POOL_REPLICAS})")

    @field_validator("pd_ratios", mode="before")
    @classmethod
    def _ratios(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        seen = set()
        for item in v:
            pair = _parse_ratio(item)
            if pair is None:
                raise ValueError(f"pool ratio {item!r} is not 'P:D' or [P, D] with whole "
                                 "numbers of replicas, e.g. '1:2'")
            if not all(1 <= n <= MAX_POOL_REPLICAS for n in pair):
                raise ValueError(f"pool ratio {item!r}: each pool has 1 to "
                                 f"{MAX_POOL_REPLICAS} replicas")
            if pair in seen:
                raise ValueError(f"pool ratio {item!r} is given twice")
            seen.add(pair)
        return v

    @property
    def pd_pairs(self) -> tuple[tuple[int, int], ...]:
        """`pd_ratios` as (prefill, decode) replica counts, in the order given."""
        return tuple(ratio_pair(r) for r in self.pd_ratios)

    @field_validator("precisions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [p for p in v if p not in PRECISIONS]
        if unknown or not v:
            raise ValueError(f"unknown precision {unknown[0] if unknown else '(none)'}; "
                             f"one of {', '.join(PRECISIONS)}")
        return v


def _parse_ratio(item: Any) -> tuple[int, int] | None:
    """(prefill, decode) of a 'P:D' string or a [P, D] pair of integers; None if neither."""
    if isinstance(item, str):
        parts = [p.strip() for p in item.split(":")]
        if len(parts) == 2 and all(p.isascii() and p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
        return None
    if isinstance(item, list) and len(item) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) for n in item):
        return int(item[0]), int(item[1])
    return None


def ratio_pair(item: str | list[int]) -> tuple[int, int]:
    """(prefill, decode) of a validated pool ratio."""
    pair = _parse_ratio(item)
    if pair is None:
        raise ValueError(f"not a pool ratio: {item!r}")
    return pair


class Spec(_Strict):
    """A capacity-planning question for `fleetplan plan`."""

    workloads: Annotated[list[WorkloadSpec], Field(min_length=1)]
    pool: Annotated[list[PoolEntry], Field(min_length=1)]
    capacities: list[Capacity] | None = Field(
        default=None, description="measured capacities; when given, no performance model is "
        "used and every replica is one accelerator")
    objective: Literal["cost", "energy", "count"] = "cost"
    options: Options = Options()

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError("workload names must be unique")
        accs = [p.accelerator for p in self.pool]
        if len(set(accs)) != len(accs):
            raise ValueError("each accelerator may appear once in the pool")
        for w in self.workloads:
            if self.capacities is None and w.model is None:
                raise ValueError(f"workload {w.name!r} needs a model (or give capacities)")
            if self.capacities is not None and w.buckets is None and not (
                    isinstance(w.input_len, int) and isinstance(w.output_len, int)):
                raise ValueError(f"workload {w.name!r}: with measured capacities, lengths "
                                 "must be buckets or fixed integers")
        return self


def _walk(raw: Any, loc: tuple[int | str, ...]) -> tuple[int | None, str]:
    """The line of the deepest key of `loc` found in the raw YAML, and the dotted field path."""
    line: int | None = raw.line if isinstance(raw, LineDict) else None
    node = raw
    parts: list[str] = []
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            parts[-1:] = [f"{parts[-1]}[{key}]"] if parts else [f"[{key}]"]
            node = node[key]
            if isinstance(node, LineDict) and node.line is not None:
                line = node.line
        elif isinstance(key, str) and isinstance(node, LineDict):
            parts.append(key)
            line = node.line_of(key)
            node = node.get(key)
        elif isinstance(key, str):
            # pydantic names union members ("int", "LengthDist"); they are not fields.
            continue
        else:
            parts.append(str(key))
    return line, ".".join(parts)


class LoadedSpec:
    """A validated spec with the raw YAML it came from, to locate later errors."""

    def __init__(self, spec: Spec, file: str, raw: Any) -> None:
        self.spec = spec
        self.file = file
        self.raw = raw

    def error(self, loc: tuple[int | str, ...], message: str) -> SpecError:
        line, field = _walk(self.raw, loc)
        return SpecError(message, file=self.file, line=line, field=field or None)

    @property
    def folder(self) -> Path:
        return Path(self.file).parent


def validate_located(cls: type[M], raw: Any, file: str) -> M:
    """Validate raw YAML data against a model; the first error becomes a SpecError at its
    line and field."""
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        first = min(errors, key=lambda e: (len(e["loc"]) == 0, _walk(raw, e["loc"])[0] or 0))
        line, field = _walk(raw, first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SpecError(message + more, file=file, line=line, field=field or None) from None


def parse_spec(raw: Any, file: str) -> LoadedSpec:
    """Validate raw YAML data; the first error becomes a SpecError at its line and field."""
    if not isinstance(raw, dict):
        raise SpecError("a spec is a mapping with workloads and pool", file=file, line=1)
    return LoadedSpec(validate_located(Spec, raw, file), file, raw)


def load_spec(path: Path) -> LoadedSpec:
    """Read, parse and validate a spec file."""
    return parse_spec(load_yaml_file(path), str(path))


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of a spec (editors autocomplete specs with it)."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fleetplan plan spec"
    return schema


def restrict_pool(loaded: LoadedSpec, accelerators: list[str]) -> LoadedSpec:
    """The spec with a pool of just these accelerators: entries the spec has keep their limits
    and prices; others join with catalog defaults."""
    spec = loaded.spec
    have = {p.accelerator: p for p in spec.pool}
    pool = [have.get(a, PoolEntry(accelerator=a)) for a in accelerators]
    update: dict[str, Any] = {"pool": pool}
    if spec.capacities is not None:
        update["capacities"] = [c for c in spec.capacities if c.accelerator in accelerators]
    return LoadedSpec(spec.model_copy(update=update), loaded.file, loaded.raw)
