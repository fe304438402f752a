"""fleetplan: analytical performance modelling and capacity planning for AI workloads.

Roofline and queueing models of accelerators, interconnects and memory tiers, and solvers that
choose accelerator mixes, parallelism and batch sizes for latency SLOs.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
