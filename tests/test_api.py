"""The public Python API: the same JSON as the CLI, byte for byte; located errors; a cheap
`import fleetplan`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fleetplan
import pytest
import yaml
from fleetplan.hardware.errors import SpecError
from fleetplan.plan.cli import app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "chat-70b-mixed-pool.yaml"
MEASURED = REPO / "examples" / "melange-capacity-table.yaml"


def _cli_json(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout


def test_estimate_equals_the_cli_json() -> None:
    code, text = _cli_json("estimate", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                           "--input-len", "1024", "--output-len", "256", "--tp", "2",
                           "--precision", "fp8", "--rate", "8", "--arrival", "gamma",
                           "--cv", "2")
    # Whole numbers where the CLI has floats: the API normalises, the JSON stays the CLI's.
    result = fleetplan.estimate("llama-3.1-8b", "h100-sxm", input_len=1024, output_len=256,
                                tp=2, precision="fp8", rate_rps=8, arrival="gamma",
                                arrival_cv=2)
    assert code == 0 and not result.infeasible
    assert result.to_json() == text
    assert result.to_dict() == json.loads(text)
    assert result.ttft_s == json.loads(text)["ttft_s"] and result.stable is True


def test_goodput_equals_the_cli_json() -> None:
    code, text = _cli_json("goodput", "--model", "llama-3.1-8b", "--accelerator", "h100-sxm",
                           "--input-len", "512", "--output-len", "128", "--slo-ttft-p99", "1.0",
                           "--slo-tpot-p99", "0.05")
    result = fleetplan.goodput("llama-3.1-8b", "h100-sxm", input_len=512, output_len=128,
                               ttft_p99_s=1.0, tpot_p99_s=0.05)
    assert code == 0 and result.to_json() == text
    assert 0 < result.goodput_rps <= result.capacity_rps
    assert dict(result.slo) == {"ttft_p99_s": 1.0, "tpot_p99_s": 0.05}


def test_plan_of_an_example_equals_the_cli_json() -> None:
    code, text = _cli_json("plan", str(EXAMPLE))
    result = fleetplan.plan(EXAMPLE)
    assert code == 0 and result.to_json() == text
    assert result.status == "optimal" and not result.infeasible
    assert result.cost_usd_h == json.loads(text)["cost_usd_h"]
    assert sum(a.count for a in result.allocations) == result.accelerators


def test_plan_of_a_mapping_equals_the_plan_of_its_file() -> None:
    mapping = yaml.safe_load(MEASURED.read_text())
    assert fleetplan.plan(mapping).to_json() == fleetplan.plan(str(MEASURED)).to_json()
    loaded = fleetplan.load_spec(MEASURED)
    assert fleetplan.plan(loaded, accelerators=["a10g"]).report.allocations[0].accelerator \
        == "a10g"


def test_load_spec_errors_carry_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(MEASURED.read_text().replace("rate_rps: 40", "rate_rps: -40"))
    line = 1 + next(k for k, t in enumerate(spec.read_text().splitlines()) if "-40" in t)
    with pytest.raises(SpecError) as err:
        fleetplan.load_spec(spec)
    assert err.value.line == line
    assert str(err.value).startswith(f"{spec}:{line}: field 'workloads[0].rate_rps': ")
    with pytest.raises(SpecError, match="malformed YAML"):
        spec.write_text("workloads: [\n")
        fleetplan.load_spec(str(spec))


def test_mapping_errors_name_the_field() -> None:
    mapping = yaml.safe_load(MEASURED.read_text())
    mapping["pool"][1]["price_usd_h"] = 0
    with pytest.raises(SpecError, match=r"^<mapping>: field 'pool\[1\].price_usd_h': "):
        fleetplan.load_spec(mapping)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"scenario": "fastest"}, "scenario"),
    ({"tp": 1.5}, "tp"),
    ({"rate_rps": "8"}, "rate_rps"),
    ({"batch": 8, "max_batch": 8}, "max_batch"),
])
def test_bad_estimate_input_is_a_spec_error(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"input_len": 512, "output_len": 128, "batch": 8, **kwargs}
    with pytest.raises(SpecError) as err:
        fleetplan.estimate("llama-3.1-8b", "h100-sxm", **args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_goodput_needs_a_positive_objective() -> None:
    with pytest.raises(SpecError, match="at least one SLO"):
        fleetplan.goodput("llama-3.1-8b", "h100-sxm", input_len=512, output_len=128)
    with pytest.raises(SpecError) as err:
        fleetplan.goodput("llama-3.1-8b", "h100-sxm", input_len=512, output_len=128,
                          ttft_p99_s=-1.0)
    assert err.value.field == "ttft_p99_s"


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_fleetplan_is_cheap() -> None:
    loaded = set(json.loads(_python("import json, sys, fleetplan; "
                                    "print(json.dumps(sorted(sys.modules)))")))
    heavy = {"numpy", "scipy", "pulp", "highspy", "pydantic", "typer", "rich", "yaml"}
    assert not heavy & loaded
    assert not {m for m in loaded if m.startswith(("fleetplan.models", "fleetplan.solvers",
                                                   "fleetplan.hardware", "fleetplan.plan."))}
    assert "estimate" in _python("import fleetplan; print(fleetplan.estimate.__name__)")


def test_plan_is_callable_whichever_import_came_first() -> None:
    # `fleetplan.plan` is also the subpackage, which the import system binds on the package
    # when a module under it is imported first.
    out = _python("import fleetplan.plan.cli as cli\n"
                  "import fleetplan\n"
                  "from fleetplan import plan\n"
                  f"print(fleetplan.plan({str(MEASURED)!r}).status, plan is fleetplan.plan,\n"
                  "      callable(cli.app))")
    assert out.split() == ["optimal", "True", "True"]


def test_compare_options_match_the_cli(runner: CliRunner) -> None:
    """`compare_options` is what `fleetplan compare SPEC --accelerators` prints."""
    spec = REPO / "examples" / "melange-capacity-table.yaml"
    rows = fleetplan.compare_options(spec, ["a10g", "a100-sxm-80gb"])
    out = runner.invoke(app, ["compare", str(spec), "--accelerators", "a10g,a100-sxm-80gb",
                              "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["options"] == json.loads(json.dumps(rows))
    alone = {r["pool"]: r for r in rows}
    # Each option is a plan of its own: the a10g-only row matches planning with only a10g.
    single = fleetplan.plan(spec, accelerators=["a10g"])
    assert alone["a10g"]["cost_usd_h"] == pytest.approx(single.cost_usd_h)
