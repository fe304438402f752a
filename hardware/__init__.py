"""Typed, immutable hardware and model-architecture specs, and the catalog loader.

No performance logic lives here; `fleetplan.models` turns these into times and bytes.
"""

from .catalog import Catalog, UnknownIdError, load_catalog
from .errors import SpecError
from .llm import Attention, Mlp, ModelArch, Moe
from .precision import BYTES_PER_VALUE, PRECISIONS, bytes_per_value
from .specs import (
    Accelerator,
    EnergySpec,
    HostMemoryTier,
    Interconnect,
    Link,
    MemoryTier,
    Node,
    Pool,
    Price,
)
from .units import GB, GiB, parse_quantity

__all__ = [
    "BYTES_PER_VALUE", "GB", "PRECISIONS", "Accelerator", "Attention", "Catalog", "EnergySpec",
    "GiB", "HostMemoryTier", "Interconnect", "Link", "MemoryTier", "Mlp", "ModelArch", "Moe",
    "Node", "Pool", "Price", "SpecError", "UnknownIdError", "bytes_per_value", "load_catalog",
    "parse_quantity",
]
