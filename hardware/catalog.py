"""Loads the YAML catalog shipped in `fleetplan/catalog/` into immutable specs.

Also loads a user's own model (a config.json or catalog-style YAML) through the same parser.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeVar

from .efficiency import CalibrationSet, parse_calibration
from .engine import EngineProfile, parse_engine
from .errors import SpecError
from .fields import Fields
from .llm import ModelArch, parse_model
from .precision import PRECISIONS
from .specs import (
    ACCELERATOR_KINDS,
    HOST_TIER_KINDS,
    LINK_SCOPES,
    TIER_KINDS,
    Accelerator,
    EnergySpec,
    HostCpu,
    HostMemoryTier,
    Interconnect,
    Link,
    MemoryTier,
    Price,
)
from .training_engine import TrainingEngine, parse_training_engine
from .yamlio import load_yaml_text

T = TypeVar("T")

CATALOG_SECTIONS = ("accelerators", "models", "interconnects", "memory", "engines")


class UnknownIdError(SpecError):
    """A catalog id that does not exist; carries close matches for a suggestion."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" \
            if self.suggestions else f"; see `fleetplan catalog list {kind}`"
        noun = {"accelerators": "accelerator", "models": "model", "interconnects":
                "interconnect", "memory": "memory tier", "engines": "engine"}.get(kind, "id")
        super().__init__(f"unknown {noun} {name!r}{hint}")


@dataclass(frozen=True)
class Catalog:
    """Everything the catalog holds, by id."""

    accelerators: Mapping[str, Accelerator]
    interconnects: Mapping[str, Interconnect]
    memory: Mapping[str, HostMemoryTier]
    models: Mapping[str, ModelArch]
    engines: Mapping[str, EngineProfile]
    calibration: CalibrationSet
    training_engines: Mapping[str, TrainingEngine]

    def engine(self, name: str) -> EngineProfile:
        """A serving engine by id or "family@version" (`versioned_id`)."""
        return _lookup(self.engines, "engines", versioned_id(self.engines, name))

    def training_engine(self, name: str) -> TrainingEngine:
        """A training framework by id or "family@version" (`versioned_id`)."""
        return _lookup(self.training_engines, "training engines",
                       versioned_id(self.training_engines, name))

    def accelerator(self, name: str) -> Accelerator:
        return _lookup(self.accelerators, "accelerators", name)

    def interconnect(self, name: str) -> Interconnect:
        return _lookup(self.interconnects, "interconnects", name)

    def memory_tier(self, name: str) -> HostMemoryTier:
        return _lookup(self.memory, "memory", name)

    def model(self, name: str) -> ModelArch:
        """A catalog model id (user files are read by the application, `plan.files`)."""
        return _lookup(self.models, "models", name)


def versioned_id(table: Mapping[str, object], name: str) -> str:
    """The entry of `table` that describes "family@version": the exact id, else the entry
    whose version is the longest dotted prefix of it ("trtllm@0" covers "trtllm@0.14.0"),
    else the family. Releases change defaults (CUDA graphs, FLOP conventions), so a versioned
    entry holds what a range of releases does."""
    if name in table or "@" not in name:
        return name
    family, version = name.split("@", 1)
    parts = version.split(".")
    for n in range(len(parts) - 1, 0, -1):
        candidate = f"{family}@{'.'.join(parts[:n])}"
        if candidate in table:
            return candidate
    return family


def _lookup(table: Mapping[str, T], kind: str, name: str) -> T:
    try:
        return table[name]
    except KeyError:
        raise UnknownIdError(kind, name, table) from None


def _catalog_root() -> Any:
    return resources.files("fleetplan").joinpath("catalog")


def _read(node: Any, rel: str) -> Any:
    return load_yaml_text(node.read_text(encoding="utf-8"), f"catalog/{rel}")


def _yaml_folder(root: Any, folder: str) -> Iterator[tuple[str, Any]]:
    """(relative path, parsed YAML) of each .yaml file in a catalog folder, by name."""
    for node in sorted((root / folder).iterdir(), key=lambda n: n.name):
        if node.name.endswith(".yaml"):
            rel = f"{folder}/{node.name}"
            yield rel, _read(node, rel)


@lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    """The shipped catalog, parsed once per process."""
    root = _catalog_root()
    links = _parse_interconnects(_read(root / "interconnects.yaml", "interconnects.yaml"),
                                 "catalog/interconnects.yaml")
    memory = _parse_memory(_read(root / "memory.yaml", "memory.yaml"), "catalog/memory.yaml")
    accelerators: dict[str, Accelerator] = {}
    for rel, data in _yaml_folder(root, "accelerators"):
        entries = Fields(data, f"catalog/{rel}")
        for acc_id in entries:
            if acc_id in accelerators:
                raise entries.error(acc_id, "duplicate accelerator id")
            accelerators[acc_id] = parse_accelerator(entries.sub(acc_id), acc_id, links)
    models: dict[str, ModelArch] = {}
    for rel, data in _yaml_folder(root, "models"):
        arch = parse_model(data, f"catalog/{rel}")
        if arch.id in models:
            raise SpecError("duplicate model id", file=f"catalog/{rel}", field="id")
        models[arch.id] = arch
    engines_fields = Fields(_read(root / "engines.yaml", "engines.yaml"), "catalog/engines.yaml")
    engines: dict[str, EngineProfile] = {}
    for name in engines_fields:
        engines[name] = parse_engine(engines_fields.sub(name), name, engines)
    training_fields = Fields(_read(root / "training_engines.yaml", "training_engines.yaml"),
                             "catalog/training_engines.yaml")
    training = {name: parse_training_engine(training_fields.sub(name), name)
                for name in training_fields}
    fitted = parse_calibration(
        _read(root / "calibration" / "default.yaml", "calibration/default.yaml"),
        "catalog/calibration/default.yaml")
    # Engines outside the fitted set take their efficiencies from their own publications.
    calibration = parse_calibration(
        _read(root / "calibration" / "published.yaml", "calibration/published.yaml"),
        "catalog/calibration/published.yaml", base=fitted)
    return Catalog(MappingProxyType(dict(sorted(accelerators.items()))),
                   MappingProxyType(links), MappingProxyType(memory),
                   MappingProxyType(dict(sorted(models.items()))),
                   MappingProxyType(dict(sorted(engines.items()))), calibration,
                   MappingProxyType(dict(sorted(training.items()))))


# ----------------------------------------------------------------------------- sections


def _source(block: Fields) -> str:
    return block.string("source")


def _parse_interconnects(data: Any, file: str) -> dict[str, Interconnect]:
    entries = Fields(data, file)
    result: dict[str, Interconnect] = {}
    for link_id in entries:
        f = entries.sub(link_id)
        try:
            result[link_id] = Interconnect(
                id=link_id, name=f.string("name"), scope=f.choice("scope", LINK_SCOPES),  # type: ignore[arg-type]
                bandwidth_per_direction_bytes_s=f.quantity("bandwidth_per_direction",
                                                           "bandwidth"),
                latency_s=f.quantity("latency", "time", positive=False), source=_source(f))
        except ValueError as err:
            if isinstance(err, SpecError):
                raise
            raise f.error(None, str(err)) from None
    return dict(sorted(result.items()))


def _parse_memory(data: Any, file: str) -> dict[str, HostMemoryTier]:
    entries = Fields(data, file)
    result: dict[str, HostMemoryTier] = {}
    for tier_id in entries:
        f = entries.sub(tier_id)
        result[tier_id] = HostMemoryTier(
            id=tier_id, name=f.string("name"), kind=f.choice("kind", HOST_TIER_KINDS),  # type: ignore[arg-type]
            capacity_bytes=f.quantity("capacity", "bytes"),
            bandwidth_bytes_s=f.quantity("bandwidth", "bandwidth"),
            latency_s=f.quantity("latency", "time", positive=False), source=_source(f))
    return dict(sorted(result.items()))


def _link(f: Fields | None, links: Mapping[str, Interconnect]) -> Link | None:
    if f is None:
        return None
    name = f.string("interconnect")
    if name not in links:
        err = UnknownIdError("interconnects", name, links)
        raise f.error("interconnect", err.message)
    return Link(links[name], f.quantity("bandwidth_per_direction", "bandwidth"),
                f.integer("domain_size", 1, minimum=1), _source(f))


def parse_accelerator(f: Fields, acc_id: str, links: Mapping[str, Interconnect]) -> Accelerator:
    """One accelerator entry of the catalog."""
    flops_block = f.sub("peak_flops")
    basis = flops_block.choice("basis", ("dense", "sparse"))
    if basis != "dense":
        raise flops_block.error("basis", "store dense (no structured sparsity) figures")
    peaks: dict[str, float] = {}
    for key in flops_block:
        if key in ("basis", "source"):
            continue
        if key not in PRECISIONS:
            raise flops_block.error(key, f"unknown precision; one of {', '.join(PRECISIONS)}")
        peaks[key] = flops_block.quantity(key, "flops")
    sources = {"peak_flops": _source(flops_block)}
    tiers = []
    for tf in f.items("memory"):
        tiers.append(MemoryTier(kind=tf.choice("tier", TIER_KINDS),  # type: ignore[arg-type]
                                capacity_bytes=tf.quantity("capacity", "bytes"),
                                bandwidth_bytes_s=tf.quantity("bandwidth", "bandwidth"),
                                technology=tf.string("technology", ""), source=_source(tf)))
    if not tiers:
        raise f.error("memory", "needs at least one tier")
    power = f.sub_or_none("power")
    if power is not None:
        sources["power"] = _source(power)
    price = None
    if pf := f.sub_or_none("price"):
        price = Price(pf.number("usd_per_hour", positive=True), str(pf.raw("date")),
                      _source(pf))
    energy = None
    if ef := f.sub_or_none("energy"):
        per_op = ef.sub_or_none("per_op")
        per_byte = ef.sub_or_none("per_byte")
        energy = EnergySpec(
            per_op_j=MappingProxyType({k: per_op.quantity(k, "energy") for k in per_op}
                                      if per_op else {}),
            per_byte_j=MappingProxyType({k: per_byte.quantity(k, "energy")
                                         for k in per_byte} if per_byte else {}),
            static_power_w=ef.quantity("static_power", "power", 0.0, positive=False),
            source=_source(ef))
    host_cpu = None
    if hf := f.sub_or_none("host_cpu"):
        host_cpu = HostCpu(hf.string("name"), hf.number("relative_launch_speed", positive=True),
                           _source(hf))
    derived = f.sub_or_none("derived")
    try:
        return Accelerator(
            id=acc_id, name=f.string("name"), kind=f.choice("kind", ACCELERATOR_KINDS),  # type: ignore[arg-type]
            vendor=f.string("vendor"), peak_flops=MappingProxyType(peaks), memory=tuple(tiers),
            tdp_w=power.quantity("tdp", "power", None) if power else None,
            scale_up=_link(f.sub_or_none("scale_up"), links),
            host_link=_link(f.sub_or_none("host_link"), links),
            scale_out=_link(f.sub_or_none("scale_out"), links), price=price, energy=energy,
            host_cpu=host_cpu,
            sources=MappingProxyType(sources),
            derived=MappingProxyType({k: str(derived.raw(k)) for k in derived}
                                     if derived else {}),
            notes=f.string("notes", ""))
    except ValueError as err:
        if isinstance(err, SpecError):
            raise
        raise f.error(None, str(err)) from None
