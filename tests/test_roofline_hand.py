"""Hand-computed cases: the arithmetic is in each test, so a wrong model disagrees with it."""

from __future__ import annotations

import pytest
from fleetplan.hardware import Catalog
from fleetplan.hardware.efficiency import Efficiency
from fleetplan.hardware.engine import EngineProfile
from fleetplan.models.comm import Fabric, all_gather, all_reduce
from fleetplan.models.device import Device
from fleetplan.models.inference import build_replica, step_time
from fleetplan.models.roofline import gemm_time
from fleetplan.models.transformer import StepShape, expected_experts_touched

IDEAL = Efficiency(compute=1.0, gemm_rows_half=0.0, memory=1.0, network=1.0,
                   seq_overhead_s=0.0)
NO_OVERHEAD = EngineProfile(
    id="ideal", name="no host overhead", max_batch=4096, max_tokens_per_step=8192,
    kv_memory_fraction=0.9, runtime_reserve_bytes=0.0, kernels_per_layer=1, graphs=True,
    kernel_launch_s=1e-9, step_overhead_s=0.0, reserve_kv_for_output=True, chunked_prefill=True,
    sliding_window=True, source="test")


def test_one_gemm_compute_bound() -> None:
    # 4096 x 8192 times 8192 x 8192 in bf16: 2 * 4096 * 8192 * 8192 = 5.4976e11 FLOP.
    # At 989.4e12 FLOP/s, 70% efficiency reduced by 4096 / (4096 + 32) rows:
    # 5.4976e11 / (989.4e12 * 0.7 * 0.992248) = 7.9998e-4 s.
    # Bytes: (4096*8192 + 8192*8192 + 4096*8192) * 2 = 268,435,456 B; at 3.35e12 * 0.85 B/s
    # that is 9.427e-5 s, so compute dominates. A GEMM's loads add to the math on its real
    # rows (GEMM_BLEND = 1; the 32 rows' worth of tile padding stretches the math pipeline
    # alone): 5.4976e11 / (989.4e12 * 0.7) + 9.427e-5 = 7.9378e-4 + 9.427e-5 = 8.8805e-4 s,
    # more than the padded math alone (7.9998e-4 s).
    eff = Efficiency(compute=0.7, gemm_rows_half=32.0, memory=0.85)
    t = gemm_time(2 * 4096 * 8192 * 8192, 268_435_456, 4096, 989.4e12, 3.35e12, eff)
    assert float(t.time) == pytest.approx(8.8805e-4, rel=1e-4)
    assert float(t.memory) == pytest.approx(9.427e-5, rel=1e-3)
    assert float(t.compute) > float(t.memory)


def test_one_gemm_memory_bound_at_one_row() -> None:
    # One token through the same 8192 x 8192 weight: 2 * 8192 * 8192 = 1.342e8 FLOP, but
    # the 134,217,728 weight bytes take 134217728 / 3.35e12 = 4.0065e-5 s at full bandwidth;
    # the math adds 1.342e8 / 989.4e12 = 1.357e-7 s: 4.0201e-5 s.
    t = gemm_time(2 * 8192 * 8192, 8192 * 8192 * 2, 1, 989.4e12, 3.35e12, IDEAL)
    assert float(t.time) == pytest.approx(4.0201e-5, rel=1e-4)
    assert float(t.memory) > float(t.compute)


def test_one_decode_step(catalog: Catalog) -> None:
    # Llama-2-7B, bf16, one sequence with 1000 tokens of context, one H100 SXM at full
    # bandwidth and no host overhead. The step streams every weight once, except the input
    # embedding table (it gathers one row of it), and the KV cache:
    #   weights (6,738,415,616 - 32000 * 4096) params * 2 B = 13,214,687,232 B
    #   KV      1000 tokens * 32 layers * 2 * 4096 * 2 B    =    524,288,000 B
    #   total                                               = 13,738,975,232 B
    # at 3.35e12 B/s: 4.1012e-3 s (activations add about 5 MB, 0.04%). The GEMMs' math adds
    # to their weight streaming (GEMM_BLEND = 1): 2 FLOP per weight, the same 6,607,343,616
    # params, 13,214,687,232 FLOP at 989.4e12 FLOP/s = 1.3356e-5 s; 4.1146e-3 s in all.
    device = Device(catalog.accelerator("h100-sxm"), IDEAL, NO_OVERHEAD)
    rep = build_replica(catalog.model("llama-2-7b"), device, weight_precision="bf16")
    step = step_time(rep, StepShape.of(decode_seqs=1, decode_ctx=1000))
    assert float(step.time) == pytest.approx(13_738_975_232 / 3.35e12
                                             + 13_214_687_232 / 989.4e12, rel=1e-3)
    assert str(step.bound()) == "memory"


def test_one_all_reduce() -> None:
    # Ring all-reduce of 16 MB over 8 GPUs in one NVLink domain, 450 GB/s per direction,
    # 1 us per hop: 2 * 7 * 1e-6 + 2 * (7/8) * 16e6 / 450e9 = 14e-6 + 62.22e-6 = 76.22e-6 s.
    fabric = Fabric(up_bw_bytes_s=450e9, up_latency_s=1e-6, domain=8, out_bw_bytes_s=50e9,
                    out_latency_s=5e-6, efficiency=1.0)
    assert float(all_reduce(16e6, 8, fabric)) == pytest.approx(76.22e-6, rel=1e-3)
    # 16 GPUs over two domains: inside, 76.22e-6 s; across, the 2 MB shard (16e6 / 8) is
    # all-reduced over 2 nodes on the NIC: 2 * 1 * 5e-6 + 2 * (1/2) * 2e6 / 50e9 = 50e-6 s.
    assert float(all_reduce(16e6, 16, fabric)) == pytest.approx(126.22e-6, rel=1e-3)
    # All-gather to 16 MB on 8 GPUs: 7 * 1e-6 + (7/8) * 16e6 / 450e9 = 38.11e-6 s.
    assert float(all_gather(16e6, 8, fabric)) == pytest.approx(38.11e-6, rel=1e-3)


def test_experts_touched() -> None:
    # Mixtral routes each token to 2 of 8 experts: one token touches 2 experts,
    # two tokens 8 * (1 - (6/8)^2) = 3.5 on average, and a large batch all 8.
    assert float(expected_experts_touched(8, 2, 1)) == pytest.approx(2.0)
    assert float(expected_experts_touched(8, 2, 2)) == pytest.approx(3.5)
    assert float(expected_experts_touched(8, 2, 1000)) == pytest.approx(8.0)


def test_launches_add_to_the_step_without_cuda_graphs(catalog: Catalog) -> None:
    # The same Llama-2-7B decode step (4.1146e-3 s of device time at full bandwidth) on an
    # engine that launches 10 kernels per layer at 5 us each, without CUDA graphs:
    #   launches = 10 * 32 layers + 4 (embedding, final norm, LM head, sampling) = 324
    #   host     = 324 * 5e-6 s = 1.62e-3 s, added to the device time: 5.7346e-3 s.
    # With graphs the step replays 4 launches (2e-5 s), hidden behind the device time.
    from dataclasses import replace

    ungraphed = replace(NO_OVERHEAD, graphs=False, kernels_per_layer=10, kernel_launch_s=5e-6)
    shape = StepShape.of(decode_seqs=1, decode_ctx=1000)
    arch = catalog.model("llama-2-7b")
    acc = catalog.accelerator("h100-sxm")
    device_s = 13_738_975_232 / 3.35e12 + 13_214_687_232 / 989.4e12
    eager = step_time(build_replica(arch, Device(acc, IDEAL, ungraphed),
                                    weight_precision="bf16"), shape)
    graphed = step_time(build_replica(arch, Device(acc, IDEAL, replace(ungraphed, graphs=True)),
                                      weight_precision="bf16"), shape)
    assert float(eager.time) == pytest.approx(device_s + 324 * 5e-6, rel=1e-3)
    assert float(eager.overhead) == pytest.approx(324 * 5e-6, rel=1e-6)
    assert float(graphed.time) == pytest.approx(device_s, rel=1e-3)


def test_attention_data_parallel_splits_sequences_not_heads(catalog: Catalog) -> None:
    # Qwen3-235B-A22B (94 layers, 4 KV heads of 128, attention projections 71,303,168 params
    # a layer), fp8 weights and KV (1 B each) over a tensor group of 8.
    # Tensor-parallel attention splits the 4 KV heads over 8 ranks, so each head sits on 2:
    #   KV per token per device = 2 * 4 * 128 / 4 shards * 94 layers = 24,064 B
    # Attention data parallelism (8 groups of 1) keeps each sequence's KV on one rank, whole:
    #   KV per token per device = 2 * 4 * 128 / 8 ranks  * 94 layers = 12,032 B
    # but each rank holds the attention projections whole instead of an eighth:
    #   extra weights = 71,303,168 * 94 * (1 - 1/8) * 1 B = 5,864,685,568 B per device
    # and schedules its own eighth of the sequences: 800 decode sequences at 10 us of host
    # time each cost 8e-3 s a step with one scheduler, 1e-3 s with eight.
    from dataclasses import replace

    from fleetplan.models.transformer import parallel_fits

    arch = catalog.model("qwen3-235b-a22b")
    host = Efficiency(compute=1.0, gemm_rows_half=0.0, memory=1.0, network=1.0,
                      seq_overhead_s=10e-6)
    device = Device(catalog.accelerator("b200"), host, NO_OVERHEAD)
    tp = build_replica(arch, device, tp=8, weight_precision="fp8")
    dp = build_replica(arch, device, tp=8, weight_precision="fp8", attn_dp=8)
    assert float(tp.memory.kv_bytes_per_token) == pytest.approx(24_064, rel=1e-12)
    assert float(dp.memory.kv_bytes_per_token) == pytest.approx(12_032, rel=1e-12)
    assert float(dp.memory.weights_bytes - tp.memory.weights_bytes) == \
        pytest.approx(5_864_685_568, rel=1e-12)
    shape = StepShape.of(decode_seqs=800, decode_ctx=1000)
    t_tp, t_dp = step_time(tp, shape), step_time(dp, shape)
    # (launches take 1e-9 s and replay as graphs, so the overhead is the schedulers' alone)
    assert float(t_tp.overhead) == pytest.approx(8e-3, rel=1e-6)
    assert float(t_dp.overhead) == pytest.approx(1e-3, rel=1e-6)
    # The engine default: attention data parallelism only where the engine runs MoE models so.
    ad = replace(NO_OVERHEAD, moe_attention_dp=True)
    assert float(build_replica(arch, Device(device.accelerator, host, ad), tp=8,
                               weight_precision="fp8").par.attn_dp) == 8.0
    dense = catalog.model("llama-2-7b")
    assert float(build_replica(dense, Device(device.accelerator, host, ad), tp=8).par.attn_dp) \
        == 1.0
    # Groups must divide the tensor group, and each group must divide the heads.
    assert parallel_fits(arch, [8, 8, 8], [1, 1, 1], [1, 1, 1], [1, 8, 3]).tolist() == \
        [True, True, False]
