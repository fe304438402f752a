"""Catalog entries as JSON-ready dicts (SI units, unit in every key) and as table rows."""

from __future__ import annotations

from typing import Any

from ..hardware.catalog import Catalog
from ..hardware.engine import EngineProfile
from ..hardware.llm import ModelArch
from ..hardware.specs import Accelerator, HostMemoryTier, Interconnect, Link
from .output import fmt_si


def _link(link: Link | None) -> dict[str, Any] | None:
    if link is None:
        return None
    return {"interconnect": link.interconnect.id,
            "bandwidth_per_direction_bytes_s": link.bandwidth_per_direction_bytes_s,
            "latency_s": link.latency_s, "domain_size": link.domain_size, "source": link.source}


def accelerator(acc: Accelerator) -> dict[str, Any]:
    return {
        "id": acc.id, "name": acc.name, "kind": acc.kind, "vendor": acc.vendor,
        "peak_flops_dense": dict(acc.peak_flops),
        "memory": [{"tier": t.kind, "technology": t.technology, "capacity_bytes": t.capacity_bytes,
                    "bandwidth_bytes_s": t.bandwidth_bytes_s, "source": t.source}
                   for t in acc.memory],
        "scale_up": _link(acc.scale_up), "host_link": _link(acc.host_link),
        "scale_out": _link(acc.scale_out), "tdp_w": acc.tdp_w,
        "price": None if acc.price is None else {
            "usd_per_hour": acc.price.usd_per_hour, "date": acc.price.date,
            "source": acc.price.source},
        "energy": None if acc.energy is None else {
            "per_op_j": dict(acc.energy.per_op_j), "per_byte_j": dict(acc.energy.per_byte_j),
            "static_power_w": acc.energy.static_power_w, "source": acc.energy.source},
        "host_cpu": None if acc.host_cpu is None else {
            "name": acc.host_cpu.name,
            "relative_launch_speed": acc.host_cpu.relative_launch_speed,
            "source": acc.host_cpu.source},
        "sources": dict(acc.sources), "derived": dict(acc.derived), "notes": acc.notes,
    }


def model(arch: ModelArch) -> dict[str, Any]:
    att = arch.attention
    return {
        "id": arch.id, "name": arch.name, "model_type": arch.model_type,
        "params": arch.params, "active_params": arch.active_params,
        "published_params": arch.published_params,
        "published_active_params": arch.published_active_params,
        "layers": arch.layers, "hidden": arch.hidden, "vocab": arch.vocab,
        "attention": {"kind": att.kind, "heads": att.num_heads, "kv_heads": att.num_kv_heads,
                      "head_dim": att.head_dim, "kv_lora_rank": att.kv_lora_rank or None,
                      "sliding_window": arch.sliding_window or None,
                      "window_layers": arch.window_layers},
        "mlp": None if arch.mlp is None else {"intermediate": arch.mlp.intermediate,
                                              "gated": arch.mlp.gated},
        "moe": None if arch.moe is None else {
            "experts": arch.moe.num_experts, "top_k": arch.moe.top_k,
            "expert_intermediate": arch.moe.expert.intermediate,
            "shared_intermediate": arch.moe.shared.intermediate if arch.moe.shared else None,
            "moe_layers": arch.moe_layers},
        "kv_values_per_token": arch.kv_values_per_token,
        "max_context": arch.max_context, "source": arch.source,
        "params_source": arch.params_source,
    }


def interconnect(link: Interconnect) -> dict[str, Any]:
    return {"id": link.id, "name": link.name, "scope": link.scope,
            "bandwidth_per_direction_bytes_s": link.bandwidth_per_direction_bytes_s,
            "latency_s": link.latency_s, "source": link.source}


def memory_tier(tier: HostMemoryTier) -> dict[str, Any]:
    return {"id": tier.id, "name": tier.name, "kind": tier.kind,
            "capacity_bytes": tier.capacity_bytes, "bandwidth_bytes_s": tier.bandwidth_bytes_s,
            "latency_s": tier.latency_s, "source": tier.source}


def engine(profile: EngineProfile) -> dict[str, Any]:
    return {"id": profile.id, "name": profile.name, "max_batch": profile.max_batch,
            "max_tokens_per_step": profile.max_tokens_per_step,
            "kv_memory_fraction": profile.kv_memory_fraction,
            "runtime_reserve_bytes": profile.runtime_reserve_bytes,
            "kernels_per_layer": profile.kernels_per_layer, "graphs": profile.graphs,
            "kernel_launch_s": profile.kernel_launch_s,
            "step_overhead_s": profile.step_overhead_s,
            "reserve_kv_for_output": profile.reserve_kv_for_output,
            "chunked_prefill": profile.chunked_prefill, "source": profile.source}


def section(catalog: Catalog, name: str) -> list[dict[str, Any]]:
    """Every entry of a catalog section, as dicts."""
    if name == "accelerators":
        return [accelerator(a) for a in catalog.accelerators.values()]
    if name == "models":
        return [model(m) for m in catalog.models.values()]
    if name == "interconnects":
        return [interconnect(i) for i in catalog.interconnects.values()]
    if name == "memory":
        return [memory_tier(t) for t in catalog.memory.values()]
    return [engine(e) for e in catalog.engines.values()]


def rows(name: str, entries: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows for a terminal or markdown table of one section."""
    if name == "accelerators":
        head = ["id", "kind", "vendor", "bf16 dense", "fp8 dense", "memory", "bandwidth",
                "scale-up / dir", "TDP", "USD/h"]

        def peak(e: dict[str, Any], p: str) -> str:
            v = e["peak_flops_dense"].get(p)
            return fmt_si(v, "FLOP/s") if v else "-"

        body = [[e["id"], e["kind"], e["vendor"], peak(e, "bf16"), peak(e, "fp8"),
                 fmt_si(e["memory"][0]["capacity_bytes"], "B"),
                 fmt_si(e["memory"][0]["bandwidth_bytes_s"], "B/s"),
                 fmt_si(e["scale_up"]["bandwidth_per_direction_bytes_s"], "B/s")
                 if e["scale_up"] else "-",
                 fmt_si(e["tdp_w"], "W"),
                 f"{e['price']['usd_per_hour']:.2f}" if e["price"] else "-"] for e in entries]
        return head, body
    if name == "models":
        head = ["id", "type", "params", "active", "layers", "hidden", "heads/kv", "attention",
                "experts"]
        body = [[e["id"], e["model_type"], f"{e['params'] / 1e9:.2f} B",
                 f"{e['active_params'] / 1e9:.2f} B", str(e["layers"]), str(e["hidden"]),
                 f"{e['attention']['heads']}/{e['attention']['kv_heads']}",
                 e["attention"]["kind"],
                 f"{e['moe']['experts']} top-{e['moe']['top_k']}" if e["moe"] else "-"]
                for e in entries]
        return head, body
    if name in ("interconnects", "memory"):
        head = ["id", "name", "scope" if name == "interconnects" else "kind",
                "bandwidth / dir" if name == "interconnects" else "bandwidth", "latency"]
        body = [[e["id"], e["name"], e.get("scope", e.get("kind", "")),
                 fmt_si(e.get("bandwidth_per_direction_bytes_s", e.get("bandwidth_bytes_s")),
                        "B/s"), fmt_si(e["latency_s"], "s")] for e in entries]
        return head, body
    head = ["id", "max batch", "tokens/step", "KV fraction", "graphs", "step overhead"]
    body = [[e["id"], str(e["max_batch"]), str(e["max_tokens_per_step"]),
             f"{e['kv_memory_fraction']:.2f}", str(e["graphs"]),
             fmt_si(e["step_overhead_s"], "s")] for e in entries]
    return head, body
