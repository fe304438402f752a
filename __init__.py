"""fleetplan: analytical performance modelling and capacity planning for AI workloads.

Roofline and queueing models of accelerators, interconnects and memory tiers, and solvers that
choose accelerator mixes, parallelism and batch sizes for latency SLOs.

The Python API (`estimate`, `goodput`, `plan`, `load_spec`; see `fleetplan.plan.api`) is
imported on first use, so that `import fleetplan` loads neither numpy nor the solvers.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import plan as _plan_package

if TYPE_CHECKING:
    from .hardware.errors import SpecError
    from .plan.api import (
        EstimateResult,
        GoodputResult,
        LoadedSpec,
        PlanResult,
        TrainEstimateResult,
        compare_options,
        estimate,
        goodput,
        load_spec,
        plan,
        train_estimate,
    )

__version__ = "0.1.0"

__all__ = ["EstimateResult", "GoodputResult", "LoadedSpec", "PlanResult", "SpecError",
           "TrainEstimateResult", "__version__", "compare_options", "estimate", "goodput",
           "load_spec", "plan", "train_estimate"]

# Public name -> the module that defines it, imported on first access (PEP 562).
_LAZY = {
    "compare_options": ".plan.api",
    "estimate": ".plan.api",
    "goodput": ".plan.api",
    "load_spec": ".plan.api",
    "EstimateResult": ".plan.api",
    "GoodputResult": ".plan.api",
    "PlanResult": ".plan.api",
    "train_estimate": ".plan.api",
    "TrainEstimateResult": ".plan.api",
    "LoadedSpec": ".plan.api",
    "SpecError": ".hardware.errors",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _CallablePackage(ModuleType):
    """`fleetplan.plan` names both the subpackage `plan/` and the API function `plan`. The
    import system sets the package attribute to the subpackage whenever it is first imported
    (the CLI does), so rebinding the name to the function would be undone or, worse, break
    `import fleetplan.plan.cli as cli`. The subpackage stays the attribute and calling it
    calls `fleetplan.plan.api.plan`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return import_module(".api", self.__name__).plan(*args, **kwargs)


_plan_package.__class__ = _CallablePackage
