"""Behaviour a code review found wrong once; each case states what must hold."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.models.device import Device
from fleetplan.models.inference import SpecDecode, build_replica, static
from fleetplan.models.queueing import Lengths, Slo, Workload, goodput, serve
from fleetplan.plan.estimate import with_draft


def _fleetplan(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from fleetplan.plan.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False)


def _device(catalog: Catalog, acc: str = "h100-sxm") -> Device:
    return Device(catalog.accelerator(acc), catalog.calibration.for_device(acc),
                  catalog.engine("trtllm"))


def test_a_model_that_does_not_fit_has_no_capacity(catalog: Catalog) -> None:
    # Llama-3.1-70B in bf16 is about 141 GB of weights: not on one 80 GiB H100.
    rep = build_replica(catalog.model("llama-3.1-70b"), _device(catalog))
    assert not bool(rep.memory.fits)
    load = Workload(np.asarray(0.01), Lengths.fixed(1024), Lengths.fixed(256))
    assert float(serve(rep, load).capacity_rps) == 0.0
    rate, binding, _ = goodput(rep, load, Slo(ttft_p99_s=10.0))
    assert float(rate) == 0.0 and str(binding) == "memory"
    result = _fleetplan("goodput", "--model", "llama-3.1-70b", "--accelerator", "h100-sxm",
                        "--input-len", "1024", "--output-len", "256", "--slo-ttft-p99", "10",
                        "--format", "json")
    assert result.returncode == 1 and json.loads(result.stdout)["binding"] == "memory"


def test_pipeline_stages_never_speed_up_one_sequence(catalog: Catalog) -> None:
    arch = catalog.model("llama-3.1-8b")
    one = static(build_replica(arch, _device(catalog), pp=1), batch=1, input_len=100_000,
                 output_len=16)
    four = static(build_replica(arch, _device(catalog), pp=4), batch=1, input_len=100_000,
                  output_len=16)
    assert float(four.tpot_s) >= float(one.tpot_s)


def test_a_draft_model_costs_time_and_memory(catalog: Catalog) -> None:
    device = _device(catalog)
    target = build_replica(catalog.model("llama-3.1-70b"), device, tp=4, weight_precision="fp8")
    small = build_replica(catalog.model("llama-3.2-1b"), device, tp=4, weight_precision="fp8")
    large = build_replica(catalog.model("llama-3.1-8b"), device, tp=4, weight_precision="fp8")
    load = Workload(np.asarray(1.0), Lengths.fixed(1024), Lengths.fixed(256))
    with_small = serve(with_draft(target, small), load, spec=SpecDecode(4, 0.7, small))
    with_large = serve(with_draft(target, large), load, spec=SpecDecode(4, 0.7, large))
    assert float(with_large.tpot.mean) > float(with_small.tpot.mean)
    assert float(with_draft(target, large).memory.kv_capacity_tokens) < \
        float(target.memory.kv_capacity_tokens)


@pytest.mark.parametrize(("args", "needle"), [
    (("--tp", "3", "--batch", "1"), "does not divide the 64 attention heads"),
    (("--pp", "100", "--batch", "1"), "exceeds the 80 layers"),
    (("--tp", "2", "--ep", "2", "--batch", "1"), "no experts"),
    (("--rate", "nan"), "positive number"),
    (("--prefill-chunk", "0", "--batch", "1"), "must be >= 1"),
    (("--draft-len", "-1", "--batch", "1"), "must be >= 0"),
    (("--disaggregate", "1:1", "--batch", "1"), "needs --rate"),
    (("--batch", "2", "--max-batch", "4"), "not both"),
])
def test_impossible_configurations_are_one_line_errors(args: tuple[str, ...],
                                                       needle: str) -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-70b", "--accelerator", "h100-sxm",
                        "--precision", "fp8", "--input-len", "128", "--output-len", "16", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_chip_without_the_format_is_refused() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.2-1b", "--accelerator", "edgecim",
                        "--precision", "bf16", "--input-len", "16", "--output-len", "16",
                        "--batch", "1")
    assert result.returncode == 2 and "no rate for bf16" in result.stderr


def test_simulating_a_model_that_does_not_fit_is_a_one_line_error() -> None:
    result = _fleetplan("simulate", "--model", "llama-3.1-70b", "--accelerator", "h100-sxm",
                        "--input-len", "1024", "--output-len", "256", "--rate", "1")
    assert result.returncode == 2 and "does not fit" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_out_path_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "report.json"
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "16", "--output-len", "16", "--batch", "1",
                        "--out", str(target))
    assert result.returncode == 2 and str(target) in result.stderr
    assert "Traceback" not in result.stderr


def test_reports_are_ordinary_files(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "16", "--output-len", "16", "--batch", "1",
                        "--format", "json", "--out", str(target))
    assert result.returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize(("text", "needle"), [
    ("defaults:\n  compute: 0.5\n", "unknown key"),
    ("accelerators:\n  h100-sxn:\n    compute: 0.5\n", "did you mean 'h100-sxm'"),
])
def test_calibration_file_typos_are_errors(tmp_path: Path, text: str, needle: str) -> None:
    calib = tmp_path / "calib.yaml"
    calib.write_text(text)
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "16", "--output-len", "16", "--batch", "1",
                        "--calibration", str(calib))
    assert result.returncode == 2 and needle in result.stderr and str(calib) in result.stderr
