"""Numeric formats: storage size per value and which compute rate runs them."""

from __future__ import annotations

from typing import Final

PRECISIONS: Final = ("fp32", "tf32", "bf16", "fp16", "fp8", "fp6", "fp4", "int8", "int4",
                     "posit16", "posit8", "posit4")

# Bytes per stored value including the per-block scale factors the format needs:
# - fp4 follows NVFP4 (OCP/NVIDIA): 4-bit values with one fp8 scale per 16 values -> 4.5 bits.
# - int4 is weight-only group quantisation (AWQ/GPTQ style) with one fp16 scale per 128 values
#   -> 4 + 16/128 = 4.125 bits.
# - fp6 is MXFP6: 6-bit values with one 8-bit scale per 32 values -> 6.25 bits.
# Everything else is its plain width; tf32 is stored as fp32.
BYTES_PER_VALUE: Final[dict[str, float]] = {
    "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0,
    "fp8": 1.0, "fp6": 6.25 / 8, "fp4": 4.5 / 8,
    "int8": 1.0, "int4": 4.125 / 8,
    "posit16": 2.0, "posit8": 1.0, "posit4": 0.5,
}

# When an accelerator has no native rate for a format, the values are widened to the next
# format in this chain before the matrix multiply (weight-only quantisation on a GPU without
# int4 tensor cores runs its GEMMs at fp16/bf16, for example).
_WIDER: Final[dict[str, tuple[str, ...]]] = {
    "fp4": ("fp6", "fp8", "bf16", "fp16", "fp32"),
    "fp6": ("fp8", "bf16", "fp16", "fp32"),
    "fp8": ("bf16", "fp16", "fp32"),
    "int4": ("int8", "fp8", "bf16", "fp16", "fp32"),
    "int8": ("fp8", "bf16", "fp16", "fp32"),
    "bf16": ("fp16", "fp32"),
    "fp16": ("bf16", "fp32"),
    "tf32": ("fp32",),
    "fp32": ("tf32",),
    "posit4": ("posit8", "posit16", "fp4", "int4", "int8", "fp16"),
    "posit8": ("posit16", "int8", "fp8", "fp16"),
    "posit16": ("fp16", "bf16", "fp32"),
}


def bytes_per_value(precision: str) -> float:
    """Storage bytes per value of a format, scales included."""
    try:
        return BYTES_PER_VALUE[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}") \
            from None


def compute_chain(precision: str) -> tuple[str, ...]:
    """The format itself, then the formats it may be widened to, narrowest first."""
    if precision not in _WIDER:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    return (precision, *_WIDER[precision])
