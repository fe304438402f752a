"""Achievable-efficiency parameters of an accelerator (and optionally an engine on it).

A handful of physical numbers per device, in the spirit of Calculon's per-device efficiency
tables: what fraction of peak FLOP/s a large GEMM reaches, how that fraction falls for GEMMs with
few rows, what fraction of peak memory bandwidth streaming reads reach, and what the host pays
per running sequence each step. Fitted on public measurements by `fleetplan calibrate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import SpecError


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Efficiency parameters; fractions are of dense peak, times in seconds."""

    compute: float = 0.70
    """Fraction of dense peak FLOP/s reached by large GEMMs."""
    gemm_rows_half: float = 32.0
    """GEMM rows (tokens) at which a GEMM reaches half of `compute` (small GEMMs idle SMs)."""
    memory: float = 0.85
    """Fraction of peak memory bandwidth reached by streaming reads (weights, KV cache)."""
    network: float = 0.80
    """Fraction of link bandwidth collectives reach."""
    moe: float = 1.0
    """Fraction of the dense-GEMM efficiency that grouped expert GEMMs reach (many small
    per-expert matrices, token permutation and routing around them), for compute and memory."""
    seq_overhead_s: float = 10e-6
    """Host time per running sequence per step (scheduling, sampling, KV-block bookkeeping)."""

    def __post_init__(self) -> None:
        for name in ("compute", "memory", "network", "moe"):
            value = getattr(self, name)
            if not (0 < value <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {value!r}")
        if not (math.isfinite(self.gemm_rows_half) and self.gemm_rows_half >= 0):
            raise ValueError("gemm_rows_half must be >= 0")
        for name in ("seq_overhead_s",):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0, got {value!r}")

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Efficiency))

    def updated(self, values: Mapping[str, float]) -> Efficiency:
        return replace(self, **dict(values))

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.names()}


@dataclass(frozen=True, slots=True)
class TrainingEfficiency:
    """Training-specific fractions, fitted on training measurements for all accelerators."""

    gemm: float = 0.60
    """Fraction of dense peak FLOP/s that large training GEMMs and flash attention reach,
    forward and backward (dgrad and wgrad with transposed operands, low-precision scaling)."""
    moe: float = 0.70
    """Fraction of the dense-GEMM rate that grouped expert GEMMs reach in training (token
    permutation, uneven expert loads, many small matrices)."""
    overlap: float = 0.70
    """Fraction of tensor- and expert-parallel collective time hidden behind compute where the
    framework overlaps them."""

    def __post_init__(self) -> None:
        for name in ("gemm", "moe"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ValueError(f"training {name} must be in (0, 1], got {value!r}")
        if not 0 <= self.overlap <= 1:
            raise ValueError(f"training overlap must be in [0, 1], got {self.overlap!r}")

    @staticmethod
    def names() -> tuple[str, ...]:
        return tuple(f.name for f in fields(TrainingEfficiency))

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.names()}


@dataclass(frozen=True)
class CalibrationSet:
    """Efficiency parameters: a default, per accelerator, per accelerator and engine family."""

    default: Efficiency
    per_accelerator: Mapping[str, Efficiency]
    per_engine: Mapping[str, Efficiency]
    """Keyed "accelerator@engine" (engine family, e.g. "h100-sxm@trtllm")."""
    source: str = ""
    training: TrainingEfficiency = TrainingEfficiency()

    def for_device(self, accelerator: str, engine: str | None = None) -> Efficiency:
        family = engine.split("@", 1)[0] if engine else None
        if family and f"{accelerator}@{family}" in self.per_engine:
            return self.per_engine[f"{accelerator}@{family}"]
        return self.per_accelerator.get(accelerator, self.default)

    def to_mapping(self) -> dict[str, Any]:
        """The YAML-ready form: only values that differ from their parent are written."""
        base = self.default.as_dict()
        out: dict[str, Any] = {"default": base, "source": self.source}
        out["accelerators"] = {k: _diff(v.as_dict(), base)
                               for k, v in sorted(self.per_accelerator.items())}
        out["engines"] = {k: _diff(v.as_dict(), self.for_device(k.split("@")[0]).as_dict())
                          for k, v in sorted(self.per_engine.items())}
        out["training"] = self.training.as_dict()
        return out


def _diff(values: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if not math.isclose(v, base[k], rel_tol=1e-12)}


def parse_calibration(data: Any, file: str, base: CalibrationSet | None = None) -> CalibrationSet:
    """A calibration mapping (the output of `fleetplan calibrate`) into a CalibrationSet.

    Over a `base`, the file's values override and what it does not mention is kept."""
    from .fields import Fields

    top = Fields(data, file)
    allowed = set(Efficiency.names())

    def read(block: Fields, parent: Efficiency) -> Efficiency:
        values: dict[str, float] = {}
        for key in block:
            if key not in allowed:
                raise block.error(key, f"unknown parameter; one of {', '.join(sorted(allowed))}")
            values[key] = block.number(key, minimum=0.0)
        try:
            return parent.updated(values)
        except ValueError as err:
            raise block.error(None, str(err)) from None

    for key in top:
        if key not in ("default", "accelerators", "engines", "source", "training"):
            raise top.error(key, "unknown key; a calibration file has default, accelerators, "
                                 "engines, training and source")
    root = base.default if base else Efficiency()
    default = read(top.sub("default"), root) if top.has("default") else root
    per_acc: dict[str, Efficiency] = dict(base.per_accelerator) if base else {}
    if top.has("accelerators"):
        accs = top.sub("accelerators")
        for name in accs:
            per_acc[name] = read(accs.sub(name), per_acc.get(name, default))
    per_engine: dict[str, Efficiency] = dict(base.per_engine) if base else {}
    if top.has("engines"):
        engines = top.sub("engines")
        for name in engines:
            if "@" not in name:
                raise engines.error(name, "expected 'accelerator@engine', e.g. h100-sxm@trtllm")
            acc = name.split("@", 1)[0]
            per_engine[name] = read(engines.sub(name), per_acc.get(acc, default))
    training = base.training if base else TrainingEfficiency()
    if top.has("training"):
        block = top.sub("training")
        values: dict[str, float] = {}
        for key in block:
            if key not in TrainingEfficiency.names():
                raise block.error(key, "unknown parameter; one of "
                                       f"{', '.join(TrainingEfficiency.names())}")
            values[key] = block.number(key, minimum=0.0)
        try:
            training = replace(training, **values)
        except ValueError as err:
            raise block.error(None, str(err)) from None
    try:
        source = top.string("source", "") or (base.source if base else "")
        return CalibrationSet(default, per_acc, per_engine, source, training)
    except ValueError as err:  # pragma: no cover - constructors above validate
        raise SpecError(str(err), file=file) from None
