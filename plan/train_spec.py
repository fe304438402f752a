"""The `fleetplan train plan` spec: a model, a token budget, a deadline or a money budget, a pool
of accelerator types and the counts that may be used, and the layout knobs to search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..hardware.errors import SpecError
from ..hardware.precision import PRECISIONS
from .files import load_yaml_file
from .spec import _Strict, validate_located

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Recompute = Literal["none", "selective", "full"]
ZeroStage = Literal[0, 1, 2, 3]
_ALL_RECOMPUTE: list[Recompute] = ["none", "selective", "full"]
_DEFAULT_ZERO: list[ZeroStage] = [1, 3]
SECONDS_PER_DAY = 86400.0
# Without a stated count list, each type is tried at 8, 16, 32, ... accelerators (whole
# 8-GPU nodes) up to its max_count.
_FIRST_COUNT = 8


class TrainPoolEntry(_Strict):
    accelerator: str
    counts: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="accelerator counts to consider; default 8, 16, 32, ... "
                                  "up to max_count")
    max_count: Annotated[int, Field(ge=1)] = 4096
    price_usd_h: PositiveFloat | None = Field(default=None,
                                              description="USD per accelerator-hour")

    def count_list(self) -> list[int]:
        if self.counts is not None:
            return sorted(set(c for c in self.counts if c <= self.max_count))
        out, n = [], _FIRST_COUNT
        while n <= self.max_count:
            out.append(n)
            n *= 2
        return out or [self.max_count]


class TrainOptions(_Strict):
    precisions: list[str] = Field(default_factory=lambda: ["bf16"])
    engine: str = "megatron"
    tp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8])
    pp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    cp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4])
    ep: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    vp: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4])
    micro_batch: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 2, 4])
    recompute: list[Recompute] = Field(default_factory=_ALL_RECOMPUTE.copy)
    zero: list[ZeroStage] = Field(default_factory=_DEFAULT_ZERO.copy)
    offload_activations: list[Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [0.0, 0.5])
    calibration: str | None = None

    @field_validator("precisions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PRECISIONS]
        if bad or not v:
            raise ValueError(f"unknown precision(s) {bad}; one of {', '.join(PRECISIONS)}")
        return v


class TrainSpec(_Strict):
    model: str = Field(description="catalog model id or a config.json path")
    tokens: PositiveFloat = Field(description="training tokens")
    seq_len: Annotated[int, Field(ge=1)] = 4096
    global_batch: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="global batch sizes in sequences to consider")
    max_global_batch_tokens: PositiveFloat = Field(
        default=4194304.0, description="upper bound on the global batch in tokens when "
                                       "global_batch is not given (the critical batch)")
    deadline_days: PositiveFloat | None = None
    budget_usd: PositiveFloat | None = None
    objective: Literal["cost", "time"] = "cost"
    pool: list[TrainPoolEntry] = Field(min_length=1)
    options: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="after")
    def _limits(self) -> TrainSpec:
        if self.objective == "cost" and not any(p.price_usd_h for p in self.pool) and \
                self.budget_usd is not None:
            raise ValueError("a budget needs price_usd_h on the pool entries or prices in "
                             "the catalog")
        return self

    @property
    def deadline_s(self) -> float | None:
        return None if self.deadline_days is None else self.deadline_days * SECONDS_PER_DAY

    def global_batches(self) -> list[int]:
        """Sequences per step: the stated list, or powers of two up to the critical batch."""
        if self.global_batch is not None:
            return sorted(set(self.global_batch))
        most = max(int(self.max_global_batch_tokens // self.seq_len), 1)
        out, n = [], 1
        while n <= most:
            out.append(n)
            n *= 2
        # Only the largest few matter for throughput; smaller ones remain for small counts.
        return out[-4:]


class LoadedTrainSpec:
    def __init__(self, spec: TrainSpec, file: str) -> None:
        self.spec = spec
        self.file = file

    @property
    def folder(self) -> Path:
        return Path(self.file).parent


def parse_train_spec(raw: Any, file: str) -> LoadedTrainSpec:
    if not isinstance(raw, dict):
        raise SpecError("a training spec is a mapping with model, tokens and pool", file=file,
                        line=1)
    return LoadedTrainSpec(validate_located(TrainSpec, raw, file), file)


def load_train_spec(path: Path) -> LoadedTrainSpec:
    return parse_train_spec(load_yaml_file(path), str(path))
