"""The catalog holds every id the project promises, cites every number, and its models'
parameter counts follow from their architectures."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from fleetplan.hardware import Catalog
from fleetplan.plan.cli import app
from typer.testing import CliRunner

ACCELERATORS = (
    "a100-sxm-40gb a100-sxm-80gb a100-pcie-80gb h100-sxm h100-pcie h100-nvl h200 gh200 b200 "
    "gb200 gb300 rtx-pro-6000 l40s l4 a10g mi250x mi300x mi325x mi355x gaudi2 gaudi3 tpu-v5e "
    "tpu-v5p tpu-v6e jetson-orin-nano jetson-agx-orin edgecim xr-npe versal-ai-edge").split()
INTERCONNECTS = ("nvlink3 nvlink4 nvlink5 nvlink-c2c xgmi pcie4 pcie5 pcie6 ib-hdr ib-ndr ib-xdr "
                 "roce-400g eth-100g").split()
MEMORY = ("host-ddr5", "cxl", "nvme")
MODELS = (
    "gpt-j-6b llama-2-7b llama-2-13b llama-2-70b llama-3-8b llama-3-70b llama-3.1-8b "
    "llama-3.1-70b llama-3.1-405b llama-3.3-70b llama-3.2-1b llama-3.2-3b mistral-7b "
    "mixtral-8x7b mixtral-8x22b falcon-180b qwen2.5-7b qwen2.5-72b qwen3-0.6b qwen3-4b "
    "qwen3-30b-a3b qwen3-235b-a22b deepseek-v3 deepseek-r1 llama-4-scout-17b-16e "
    "llama-4-maverick-17b-128e phi-3.5-mini tinyllama-1.1b smollm2-1.7b gpt-oss-120b "
    "gpt3-175b").split()

REPO = Path(__file__).resolve().parent.parent



def test_every_promised_id_is_there(catalog: Catalog) -> None:
    assert set(ACCELERATORS) <= set(catalog.accelerators)
    assert set(INTERCONNECTS) <= set(catalog.interconnects)
    assert set(MEMORY) <= set(catalog.memory)
    assert set(MODELS) <= set(catalog.models)


@pytest.mark.parametrize("model_id", MODELS)
def test_parameter_counts_match_published(catalog: Catalog, model_id: str) -> None:
    arch = catalog.models[model_id]
    assert arch.published_params and arch.published_active_params
    assert arch.params == pytest.approx(arch.published_params, rel=0.03)
    assert arch.comparable_active_params == pytest.approx(arch.published_active_params,
                                                          rel=0.03)


def test_hand_counted_llama2_7b(catalog: Catalog) -> None:
    # 32 layers x (4 x 4096^2 attention + 3 x 4096 x 11008 MLP + 2 x 4096 norms)
    # + 2 x 32000 x 4096 (embedding, untied LM head) + 4096 final norm = 6,738,415,616.
    per_layer = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096
    assert catalog.models["llama-2-7b"].params == 32 * per_layer + 2 * 32000 * 4096 + 4096
    assert catalog.models["llama-2-7b"].params == 6_738_415_616


def test_moe_active_params_count_top_k_experts(catalog: Catalog) -> None:
    mixtral = catalog.models["mixtral-8x7b"]
    assert mixtral.moe is not None and mixtral.moe.top_k == 2
    # Six of the eight experts per layer sit idle for any one token.
    idle = mixtral.moe_layers * 6 * mixtral.moe.expert.params(mixtral.hidden)
    assert mixtral.params - mixtral.active_params == idle


def test_every_number_cites_a_source(catalog: Catalog) -> None:
    for acc in catalog.accelerators.values():
        assert acc.sources.get("peak_flops"), acc.id
        assert all(t.source for t in acc.memory), acc.id
        for link in (acc.scale_up, acc.host_link, acc.scale_out):
            assert link is None or link.source, acc.id
        if acc.tdp_w is not None:
            assert acc.sources.get("power"), acc.id
        if acc.price is not None:
            assert acc.price.source and acc.price.date, acc.id
        if acc.energy is not None:
            assert acc.energy.source, acc.id
    for interconnect in catalog.interconnects.values():
        assert interconnect.source, interconnect.id
    for tier in catalog.memory.values():
        assert tier.source, tier.id
    for arch in catalog.models.values():
        assert arch.source and arch.params_source, arch.id
    for engine in catalog.engines.values():
        assert engine.source, engine.id


def test_link_bandwidth_is_per_direction(catalog: Catalog) -> None:
    # NVIDIA's "900 GB/s" NVLink 4 figure counts both directions: 450 GB/s each way.
    assert catalog.interconnects["nvlink4"].bandwidth_per_direction_bytes_s == 450e9
    assert catalog.accelerators["h100-sxm"].scale_up is not None
    assert catalog.accelerators["h100-sxm"].scale_up.bandwidth_per_direction_bytes_s == 450e9


def test_peak_flops_are_dense(catalog: Catalog) -> None:
    # H100 SXM: 989.4 TFLOPS bf16 dense (1979 with 2:4 sparsity).
    assert catalog.accelerators["h100-sxm"].peak_flops["bf16"] == pytest.approx(989e12, rel=0.01)
    # MI300X: 1307.4 TFLOPS bf16 dense.
    assert catalog.accelerators["mi300x"].peak_flops["bf16"] == pytest.approx(1307.4e12, rel=0.01)


def test_non_gpu_engines_state_derivations(catalog: Catalog) -> None:
    for acc_id in ("edgecim", "xr-npe", "versal-ai-edge"):
        acc = catalog.accelerators[acc_id]
        assert acc.kind in ("cim", "npu", "edge-soc")
        assert acc.derived, f"{acc_id} must say which fields are derived and how"
    assert catalog.accelerators["edgecim"].energy is not None


def test_catalog_list_json_lists_every_accelerator(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "list", "accelerators", "--format", "json"])
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    assert set(ACCELERATORS) <= {e["id"] for e in entries}
    assert all(e["kind"] in ("gpu", "tpu", "npu", "cim", "edge-soc") for e in entries)


def test_catalog_list_models_json_has_counts(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "list", "models", "--format", "json"])
    assert result.exit_code == 0
    entries = {e["id"]: e for e in json.loads(result.stdout)}
    assert set(MODELS) <= set(entries)
    assert entries["mixtral-8x7b"]["active_params"] < entries["mixtral-8x7b"]["params"]
    assert isinstance(entries["llama-3.1-70b"]["params"], int)


def test_catalog_show_json(runner: CliRunner) -> None:
    result = runner.invoke(app, ["catalog", "show", "h200", "--format", "json"])
    assert result.exit_code == 0
    entry = json.loads(result.stdout)
    assert entry["id"] == "h200" and entry["kind"] == "gpu"
    assert entry["memory"][0]["capacity_bytes"] > 140e9


def test_shipped_calibration_data_matches_shared() -> None:
    shared = REPO.parent / "shared" / "calibration"
    if not shared.is_dir():
        pytest.skip("shared/calibration is not beside this checkout")
    packaged = Path(str(resources.files("fleetplan").joinpath("catalog/calibration")))
    for name in ("inference.csv", "training.csv"):
        assert (packaged / name).read_bytes() == (shared / name).read_bytes(), name


@pytest.mark.parametrize(("edit", "field", "message"), [
    (("    tdp: 700 W", "    tdp: seven hundred"), "h100-sxm.power.tdp", "expected '<number>"),
    (("    bf16: 989 TFLOPS", "    bf16: -989 TFLOPS"), "h100-sxm.peak_flops.bf16",
     "non-negative"),
    (("  vendor: nvidia\n", ""), "h100-sxm.vendor", "is required"),
    (("      bandwidth: 3.35 TB/s", "      bandwidth: 3.35 TB"), "h100-sxm.memory[0].bandwidth",
     "not a bandwidth unit"),
])
def test_bad_catalog_entry_names_file_line_and_field(catalog: Catalog, edit: tuple[str, str],
                                                     field: str, message: str) -> None:
    from fleetplan.hardware.catalog import parse_accelerator
    from fleetplan.hardware.errors import SpecError
    from fleetplan.hardware.fields import Fields
    from fleetplan.hardware.yamlio import load_yaml_text

    text = (REPO / "catalog" / "accelerators" / "nvidia.yaml").read_text()
    start = text.index("\nh100-sxm:") + 1
    end = text.index("\nh100-pcie:") + 1
    entry = text[start:end]
    assert edit[0] in entry
    data = load_yaml_text(entry.replace(edit[0], edit[1], 1), "nvidia.yaml")
    with pytest.raises(SpecError) as info:
        parse_accelerator(Fields(data, "nvidia.yaml").sub("h100-sxm"), "h100-sxm",
                          catalog.interconnects)
    err = info.value
    assert err.file == "nvidia.yaml" and err.field == field and err.line is not None
    assert message in err.message


def test_versioned_engine_entries(catalog: Catalog) -> None:
    # "trtllm@0" describes every 0.x release (TensorRT engines, CUDA graphs opt-in) and
    # inherits the rest of "trtllm"; 1.x releases and unversioned names get the family.
    old = catalog.engine("trtllm@0.14.0")
    assert old.id == "trtllm@0" and not old.graphs
    assert catalog.engine("trtllm@0.9").id == "trtllm@0"
    assert catalog.engine("trtllm@1.0").id == "trtllm" and catalog.engine("trtllm").graphs
    base = catalog.engine("trtllm")
    assert (old.max_batch, old.kv_memory_fraction, old.kernel_launch_s) == \
        (base.max_batch, base.kv_memory_fraction, base.kernel_launch_s)
    assert catalog.training_engine("megatron@2021-04").id == "megatron@2021-04"


@pytest.mark.parametrize(("entry", "field", "message"), [
    ("x:\n  inherits: nothing\n", "x.inherits", "not an engine defined above"),
    ("x:\n  inherits: trtllm\n  graphs: sometimes\n", "x.graphs", "expected true or false"),
    ("x:\n  inherits: trtllm\n  colour: red\n", "x.colour", "unknown field"),
])
def test_bad_engine_entry_names_the_field(catalog: Catalog, entry: str, field: str,
                                          message: str) -> None:
    from fleetplan.hardware.engine import parse_engine
    from fleetplan.hardware.errors import SpecError
    from fleetplan.hardware.fields import Fields
    from fleetplan.hardware.yamlio import load_yaml_text

    data = load_yaml_text(entry, "engines.yaml")
    with pytest.raises(SpecError) as info:
        parse_engine(Fields(data, "engines.yaml").sub("x"), "x", catalog.engines)
    assert info.value.field == field and message in info.value.message
