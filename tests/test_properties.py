"""Properties that must hold for any configuration (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import numpy as np
from fleetplan.hardware import load_catalog
from fleetplan.hardware.specs import MemoryTier
from fleetplan.models.device import Device
from fleetplan.models.inference import build_replica, static, step_time
from fleetplan.models.transformer import StepShape
from hypothesis import given, settings
from hypothesis import strategies as st

CATALOG = load_catalog()
MODELS = ["llama-3.1-8b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gpt-oss-120b",
          "mistral-7b", "falcon-180b", "llama-4-scout-17b-16e"]
ACCELERATORS = ["h100-sxm", "a100-sxm-80gb", "mi300x", "l40s", "b200"]


def _device(acc_id: str, scale_flops: float = 1.0, scale_bw: float = 1.0) -> Device:
    acc = CATALOG.accelerator(acc_id)
    acc = replace(acc, peak_flops=MappingProxyType({k: v * scale_flops
                                                    for k, v in acc.peak_flops.items()}),
                  memory=tuple(MemoryTier(t.kind, t.capacity_bytes, t.bandwidth_bytes_s * scale_bw,
                                          t.technology, t.source) for t in acc.memory))
    return Device(acc, CATALOG.calibration.for_device(acc_id), CATALOG.engine("trtllm"))


shapes = st.builds(
    lambda pre, dec, ctx: StepShape.of(prefill_tokens=pre, prefill_ctx=pre / 2.0,
                                       prefill_seqs=1.0 if pre else 0.0, decode_seqs=dec,
                                       decode_ctx=ctx),
    st.sampled_from([0, 128, 2048]), st.integers(0, 512), st.integers(1, 32768))


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), acc=st.sampled_from(ACCELERATORS), shape=shapes,
       tp=st.sampled_from([1, 2, 8]), factor=st.floats(1.0, 4.0))
def test_more_bandwidth_or_flops_is_never_slower(model: str, acc: str, shape: StepShape,
                                                 tp: int, factor: float) -> None:
    arch = CATALOG.model(model)
    base = step_time(build_replica(arch, _device(acc), tp=tp), shape).time
    faster_mem = step_time(build_replica(arch, _device(acc, scale_bw=factor), tp=tp), shape).time
    faster_fl = step_time(build_replica(arch, _device(acc, scale_flops=factor), tp=tp),
                          shape).time
    assert float(faster_mem) <= float(base) * (1 + 1e-12)
    assert float(faster_fl) <= float(base) * (1 + 1e-12)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), acc=st.sampled_from(ACCELERATORS),
       precision=st.sampled_from(["bf16", "fp8", "fp4", "int4"]))
def test_more_tp_never_needs_more_memory_per_accelerator(model: str, acc: str,
                                                         precision: str) -> None:
    arch = CATALOG.model(model)
    reps = [build_replica(arch, _device(acc), tp=tp, weight_precision=precision)
            for tp in (1, 2, 4, 8)]
    weights = [float(r.memory.weights_bytes) for r in reps]
    kv = [float(r.memory.kv_bytes_per_token) for r in reps]
    assert weights == sorted(weights, reverse=True)
    assert kv == sorted(kv, reverse=True)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), acc=st.sampled_from(ACCELERATORS),
       narrow=st.sampled_from(["fp8", "fp4", "int4", "int8"]))
def test_narrower_weights_never_need_more_memory(model: str, acc: str, narrow: str) -> None:
    arch = CATALOG.model(model)
    wide = build_replica(arch, _device(acc), weight_precision="bf16", kv_precision="bf16")
    thin = build_replica(arch, _device(acc), weight_precision=narrow, kv_precision="bf16")
    assert float(thin.memory.weights_bytes) <= float(wide.memory.weights_bytes)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS[:3]), acc=st.sampled_from(ACCELERATORS),
       ctx=st.integers(128, 4096))
def test_decode_throughput_rises_with_batch(model: str, acc: str, ctx: int) -> None:
    arch = CATALOG.model(model)
    rep = build_replica(arch, _device(acc), tp=8, weight_precision="fp8")
    batches = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    est = static(rep, batch=batches, input_len=ctx, output_len=64)
    tok_s = batches / est.tpot_s
    # Non-decreasing until the batch no longer fits: memory- or compute-bound then.
    fits = est.feasible
    assert np.all(np.diff(tok_s[fits]) >= -1e-9 * tok_s[fits][:-1])
