"""Every command has help; JSON output is clean; bad input exits 2 with one located line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from fleetplan import __version__
from fleetplan.plan.cli import app
from typer.testing import CliRunner


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: Any, prefix: list[str]) -> None:
        paths.append(prefix)
        # typer ships its own click; a group is whatever has sub-commands.
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_commands_exist() -> None:
    names = {" ".join(p) for p in _command_paths()}
    assert {"catalog list", "catalog show", "estimate", "validate", "calibrate", "goodput",
            "sweep", "simulate"} <= names


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "root")
def test_every_command_has_help(runner: CliRunner, path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout and len(result.stdout) > 80


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"fleetplan {__version__}"


def _fleetplan(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point (error handling lives in main())."""
    code = "from fleetplan.plan.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False)


def test_estimate_json_is_the_only_stdout() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "512", "--output-len", "128", "--batch", "8",
                        "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("ttft_s", "tpot_s", "output_tok_s_total", "output_tok_s_per_accelerator",
                "batch", "memory", "bound", "energy_j_per_token"):
        assert key in report
    assert report["bound"]["decode"] in ("compute", "memory", "network", "overhead")


def test_estimate_with_rate_reports_latency() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--precision", "fp8", "--input-len", "512", "--output-len", "128",
                        "--rate", "5", "--input-dist", "lognormal:512:256", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(report["latency"][name]) == {"mean", "p50", "p90", "p99"}
    assert report["stable"] is True and 0 < report["utilization"] < 1


def test_goodput_command() -> None:
    result = _fleetplan("goodput", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--precision", "fp8", "--input-len", "512", "--output-len", "128",
                        "--slo-ttft-p99", "0.5", "--slo-tpot-p99", "0.02", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert 0 < report["goodput_rps"] <= report["capacity_rps"]
    assert report["binding"] in ("ttft_p99", "tpot_p99", "capacity")


def test_simulate_is_seeded_and_reproducible() -> None:
    args = ("simulate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--precision",
            "fp8", "--input-len", "512", "--output-len", "64", "--output-dist",
            "lognormal:64:32", "--rate", "10", "--requests", "400", "--replicas", "2",
            "--routing", "jsq", "--format", "json")
    first, again = _fleetplan(*args, "--seed", "3"), _fleetplan(*args, "--seed", "3")
    other = _fleetplan(*args, "--seed", "4")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout != other.stdout
    report = json.loads(first.stdout)
    assert set(report["latency"]["ttft_s"]) == {"mean", "p50", "p90", "p99"}
    assert report["simulation"]["replicas"] == 2


def test_trace_replay(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"{0.1 * k:.3f},{200 + 10 * (k % 7)},{20 + k % 5}" for k in range(300)]
    trace.write_text("arrival_s,input_len,output_len\n" + "\n".join(rows) + "\n")
    result = _fleetplan("simulate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "1", "--output-len", "1", "--trace", str(trace),
                        "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["simulation"]["trace"] is True
    assert report["inputs"]["rate_rps"] == pytest.approx(10.0)  # 299 gaps over 29.9 s


def test_bad_trace_names_line_and_column(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_s,input_len,output_len\n0.0,100,10\n0.5,-3,10\n")
    result = _fleetplan("simulate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "1", "--output-len", "1", "--trace", str(trace))
    _assert_one_line_error(result, f"{trace}:3", "input_len", "integer >= 1")


def test_bad_length_distribution() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "512", "--output-len", "128", "--rate", "5",
                        "--input-dist", "lognormal:512")
    _assert_one_line_error(result, "input_dist", "lognormal:MEAN:STD")


def test_estimate_out_file_written(tmp_path: Path) -> None:
    out = tmp_path / "est.json"
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "512", "--output-len", "128", "--batch", "8",
                        "--format", "json", "--out", str(out))
    assert result.returncode == 0 and result.stdout == ""
    assert json.loads(out.read_text())["inputs"]["model"] == "llama-3.1-8b"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_same_input_same_bytes() -> None:
    args = ("estimate", "--model", "mixtral-8x7b", "--accelerator", "h200", "--tp", "2",
            "--precision", "fp8", "--input-len", "1024", "--output-len", "256",
            "--scenario", "max_throughput", "--format", "json")
    assert _fleetplan(*args).stdout == _fleetplan(*args).stdout


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_model_suggests() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-70", "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1")
    _assert_one_line_error(result, "unknown model 'llama-3.1-70'", "did you mean",
                           "'llama-3.1-70b'")


def test_unknown_accelerator_suggests() -> None:
    result = _fleetplan("catalog", "show", "h100-sxn")
    _assert_one_line_error(result, "'h100-sxn'", "did you mean", "'h100-sxm'")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "calib.yaml"
    bad.write_text("default:\n  compute: [0.5\n")
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1",
                        "--calibration", str(bad))
    _assert_one_line_error(result, str(bad), "malformed YAML", ":3")


@pytest.mark.parametrize(("value", "message"), [("high", "expected a number"),
                                                 ("-0.5", "must be >= 0"),
                                                 ("1.5", "must be in (0, 1]")])
def test_bad_yaml_field_names_file_line_field(tmp_path: Path, value: str, message: str) -> None:
    bad = tmp_path / "calib.yaml"
    bad.write_text(f"default:\n  memory: 0.8\n  compute: {value}\n")
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1",
                        "--calibration", str(bad))
    _assert_one_line_error(result, f"{bad}:", "default", message)


def test_missing_config_json_field(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    result = _fleetplan("estimate", "--model", str(cfg), "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1")
    _assert_one_line_error(result, str(cfg), "num_hidden_layers", "is required")


def test_malformed_config_json(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama",\n "hidden_size": }')
    result = _fleetplan("estimate", "--model", str(cfg), "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1")
    _assert_one_line_error(result, f"{cfg}:2", "malformed JSON")


def test_negative_config_field(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096,
                               "intermediate_size": 11008, "num_hidden_layers": -2,
                               "num_attention_heads": 32, "vocab_size": 32000}))
    result = _fleetplan("estimate", "--model", str(cfg), "--accelerator", "h100-sxm",
                        "--input-len", "8", "--output-len", "8", "--batch", "1")
    _assert_one_line_error(result, "num_hidden_layers", "must be >= 1")


def test_users_config_json_loads_like_catalog(tmp_path: Path) -> None:
    cfg = tmp_path / "my-llama.json"
    cfg.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096,
                               "intermediate_size": 11008, "num_hidden_layers": 32,
                               "num_attention_heads": 32, "vocab_size": 32000,
                               "hidden_act": "silu"}))
    mine = _fleetplan("estimate", "--model", str(cfg), "--accelerator", "h100-sxm",
                      "--input-len", "64", "--output-len", "64", "--batch", "4",
                      "--format", "json")
    ref = _fleetplan("estimate", "--model", "llama-2-7b", "--accelerator", "h100-sxm",
                     "--input-len", "64", "--output-len", "64", "--batch", "4",
                     "--format", "json")
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout)["tpot_s"] == json.loads(ref.stdout)["tpot_s"]


def test_bad_measurement_csv(tmp_path: Path, inference_csv: Path) -> None:
    lines = inference_csv.read_text().splitlines()
    header, row = lines[0], lines[1].split(",")
    row[header.split(",").index("value")] = "lots"
    bad = tmp_path / "m.csv"
    bad.write_text(header + "\n" + ",".join(row) + "\n")
    result = _fleetplan("validate", str(bad))
    _assert_one_line_error(result, f"{bad}:2", "'value'", "expected a number")


def test_missing_file() -> None:
    result = _fleetplan("validate", "/nonexistent/m.csv")
    _assert_one_line_error(result, "/nonexistent/m.csv", "cannot read")


def test_invalid_option_is_a_usage_error() -> None:
    result = _fleetplan("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                        "--input-len", "abc", "--output-len", "8")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--input-len" in result.stderr
