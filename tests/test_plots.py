"""Charts: each of the four renders to a valid, non-empty PNG and SVG; the same input gives the
same SVG bytes; a suffix other than .png/.svg is refused; every --plot option of the CLI writes
its image; and the roofline's operators add up to the estimate's step times."""

from __future__ import annotations

import json
import struct
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fleetplan.hardware import Catalog
from fleetplan.hardware.errors import SpecError
from fleetplan.models.inference import max_throughput, static
from fleetplan.models.op_breakdown import max_throughput_phases, op_points, static_phases
from fleetplan.plan import plots
from fleetplan.plan.cli import app, main
from fleetplan.plan.estimate import EstimateRequest, resolve, run_sweep
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
PLAN_SPEC = REPO / "examples" / "chat-70b-mixed-pool.yaml"
GIB = 2.0**30
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"
ESTIMATE_ARGS = ["--model", "llama-3.1-8b", "--accelerator", "h100-sxm", "--input-len", "512",
                 "--output-len", "128"]

needs_mpl = pytest.mark.skipif(find_spec("matplotlib") is None,
                               reason="matplotlib (the plot extra) is not installed")


def _check_image(path: Path) -> None:
    """A PNG with its magic bytes and a plausible IHDR size, or an SVG that parses as XML
    with an <svg> root and some drawing in it."""
    data = path.read_bytes()
    assert len(data) > 1000
    if path.suffix == ".png":
        assert data[:8] == PNG_MAGIC
        assert data[12:16] == b"IHDR"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 300 and height >= 300
        if find_spec("PIL") is not None:
            from PIL import Image

            with Image.open(path) as image:
                assert image.size == (width, height)
                image.verify()
    else:
        root = ET.fromstring(data)
        assert root.tag == SVG_ROOT
        assert sum(1 for _ in root.iter()) > 50


# ----------------------------------------------------------------------------- chart data


@pytest.fixture(scope="module")
def roofline(catalog: Catalog) -> plots.RooflineData:
    req = EstimateRequest("llama-3.1-8b", "h100-sxm", 512, 128, batch=8, precision="fp8")
    return plots.roofline_data(req, catalog, catalog.calibration)


@pytest.fixture(scope="module")
def latency(catalog: Catalog) -> plots.LatencyCurve:
    req = EstimateRequest("llama-3.1-8b", "h100-sxm", 512, 128, scenario="max_throughput")
    sweep = run_sweep(req, [0.1, 0.3, 0.5, 0.7, 0.9, 0.95], catalog, catalog.calibration)
    return plots.latency_curve(sweep, slo_ttft_p99_s=0.5, slo_tpot_p99_s=0.03)


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, dict[str, Any]]:
    """`fleetplan plan --format json --plot`, run once: the result, the image, the report."""
    image = tmp_path_factory.mktemp("plan") / "pareto.svg"
    result = CliRunner().invoke(app, ["plan", str(PLAN_SPEC), "--format", "json",
                                      "--plot", str(image)])
    return result, image, json.loads(result.stdout) if result.exit_code == 0 else {}


MEMORY_BARS = [
    ("tp8 pp4 zero1", {"weights": 8 * GIB, "gradients": 8 * GIB, "optimizer": 24 * GIB,
                       "activations": 20 * GIB, "other": 3 * GIB}),
    ("tp4 pp8 zero3", {"weights": 2 * GIB, "gradients": 2 * GIB, "optimizer": 6 * GIB,
                       "activations": 85 * GIB, "other": 3 * GIB}),
]
H100_BYTES = 80 * GIB


Renderer = Callable[[Path], None]


@pytest.fixture(scope="module")
def charts(roofline: plots.RooflineData, latency: plots.LatencyCurve,
           plan_run: tuple[Any, Path, dict[str, Any]]) -> dict[str, Renderer]:
    pareto = plots.pareto_data(plan_run[2])
    return {
        "roofline": lambda p: plots.render_roofline(roofline, p),
        "latency": lambda p: plots.render_latency(latency, p),
        "pareto": lambda p: plots.render_pareto(pareto, p),
        "memory": lambda p: plots.render_memory_breakdown(MEMORY_BARS, H100_BYTES, p),
    }


CHARTS = ["roofline", "latency", "pareto", "memory"]


# ----------------------------------------------------------------------------- rendering


@needs_mpl
@pytest.mark.parametrize("chart", CHARTS)
def test_chart_renders_a_valid_png(charts: dict[str, Renderer], tmp_path: Path,
                                   chart: str) -> None:
    path = tmp_path / f"{chart}.png"
    charts[chart](path)
    _check_image(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@needs_mpl
@pytest.mark.parametrize("chart", CHARTS)
def test_chart_renders_a_valid_svg_byte_identical_across_renders(
        charts: dict[str, Renderer], tmp_path: Path, chart: str) -> None:
    first, second = tmp_path / f"{chart}.svg", tmp_path / "again.svg"
    charts[chart](first)
    _check_image(first)
    charts[chart](second)
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("name", ["chart.jpg", "chart.pdf", "chart", "chart.png.txt"])
def test_bad_suffix_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.png or FILE\.svg"):
        plots.render_memory_breakdown(MEMORY_BARS, H100_BYTES, tmp_path / name)
    assert not any(tmp_path.iterdir())


@needs_mpl
def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "chart.SVG"
    plots.render_memory_breakdown(MEMORY_BARS, H100_BYTES, path)
    assert ET.parse(path).getroot().tag == SVG_ROOT


@needs_mpl
def test_bad_data_leaves_the_old_image(tmp_path: Path) -> None:
    path = tmp_path / "memory.png"
    plots.render_memory_breakdown(MEMORY_BARS, H100_BYTES, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="non-negative"):
        plots.render_memory_breakdown([("bad", {"weights": -1.0})], H100_BYTES, path)
    with pytest.raises(ValueError, match="capacity"):
        plots.render_memory_breakdown(MEMORY_BARS, 0.0, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ----------------------------------------------------------------------------- chart data


@pytest.mark.parametrize("kw", [
    {"batch": 8}, {"batch": 8, "precision": "fp8", "draft_len": 3},
    {"scenario": "max_throughput"}, {"scenario": "max_throughput", "tp": 2, "pp": 2},
], ids=["static", "static-fp8-spec", "max-throughput", "max-throughput-tp2pp2"])
def test_operators_add_up_to_the_estimates_steps(catalog: Catalog, kw: dict[str, Any]) -> None:
    """Per-stage operator times times the stages are the step's compute plus memory time."""
    req = EstimateRequest("llama-3.1-8b", "h100-sxm", 512, 128, **kw)
    r = resolve(req, catalog, catalog.calibration)
    rep = r.replica
    if req.scenario == "static":
        est = static(rep, batch=8, input_len=512, output_len=128, spec=r.spec)
        phases = static_phases(rep, batch=8, input_len=512, output_len=128, spec=r.spec)
    else:
        est = max_throughput(rep, input_len=512, output_len=128, spec=r.spec)
        phases = max_throughput_phases(rep, batch=est.batch, input_len=512, output_len=128,
                                       spec=r.spec)
    for phase, step in zip(phases, (est.prefill, est.decode), strict=True):
        ops = sum(p.time_s for p in op_points(rep, phase)) * req.pp
        assert ops == pytest.approx(float(step.compute + step.memory), rel=1e-12)


def test_roofline_points_lie_under_the_peak_roofline(roofline: plots.RooflineData) -> None:
    top = max(r.value for r in roofline.roofs)
    bandwidth = max(s.value for s in roofline.slopes)
    assert {p.phase for p in roofline.points} == {"prefill", "decode"}
    for p in roofline.points:
        bound = min(top, bandwidth * p.intensity_flop_per_byte)
        assert 0 < p.achieved_flops_s <= bound * (1 + 1e-12), p
    # fp8 GEMMs with 16-bit attention: both compute roofs are drawn, datasheet and achievable.
    assert len(roofline.roofs) == 4 and sum(r.achievable for r in roofline.roofs) == 2


def test_pareto_marks_the_chosen_candidate(plan_run: tuple[Any, Path, dict[str, Any]]) -> None:
    report = plan_run[2]
    data = plots.pareto_data(report)
    assert [f for f, _ in data.fronts] == [f["family"] for f in report["search"]]
    assert len(data.chosen) + len(data.off_front) >= len(report["allocations"]) >= 1
    for family, point in data.chosen:
        front = dict(data.fronts)[family]
        assert point in front
    assert data.ttft_slos == (("llama-3.1-70b", "chat", 1.0),)


def test_latency_curve_refuses_a_bad_slo() -> None:
    sweep = {"capacity_rps": 1.0, "points": []}
    with pytest.raises(SpecError, match="slo_tpot_p99"):
        plots.latency_curve(sweep, slo_tpot_p99_s=-0.05)


# ----------------------------------------------------------------------------- CLI


@needs_mpl
def test_estimate_plot_writes_a_roofline(runner: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "roofline.png"
    result = runner.invoke(app, ["estimate", *ESTIMATE_ARGS, "--batch", "8", "--format", "json",
                                 "--plot", str(image)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["feasible"] is True  # the report still goes to stdout
    _check_image(image)


@needs_mpl
def test_sweep_plot_writes_latency_versus_load(runner: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "latency.svg"
    result = runner.invoke(app, ["sweep", *ESTIMATE_ARGS, "--slo-ttft-p99", "0.5",
                                 "--slo-tpot-p99", "0.03", "--plot", str(image)])
    assert result.exit_code == 0, result.output
    assert "latency vs load" in result.stdout
    _check_image(image)


@needs_mpl
def test_plan_plot_writes_the_pareto_fronts(plan_run: tuple[Any, Path, dict[str, Any]]) -> None:
    result, image, report = plan_run
    assert result.exit_code == 0, result.output
    assert report["status"] in ("optimal", "feasible")
    _check_image(image)


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *args: str) -> tuple[int, str, str]:
    """The console entry point in process (it turns library errors into exit code 2)."""
    monkeypatch.setattr(sys, "argv", ["fleetplan", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_bad_plot_suffix_exits_2_before_any_work(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    code, out, err = _main(monkeypatch, capsys, "estimate", *ESTIMATE_ARGS, "--batch", "8",
                           "--plot", str(tmp_path / "roofline.jpg"))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "FILE.png or FILE.svg" in err
    assert not any(tmp_path.iterdir())


def test_plot_into_a_missing_folder_exits_2_before_planning(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    code, out, err = _main(monkeypatch, capsys, "plan", str(PLAN_SPEC), "--plot",
                           str(tmp_path / "missing" / "pareto.png"))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "no folder" in err


def test_plot_without_matplotlib_exits_2_with_the_install_hint(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import matplotlib` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    image = tmp_path / "latency.png"
    code, out, err = _main(monkeypatch, capsys, "sweep", *ESTIMATE_ARGS, "--plot", str(image))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "pip install 'fleetplan[plot]'" in err, err
    assert not image.exists()


def test_array_replica_is_refused(catalog: Catalog) -> None:
    """op_points describes one configuration; a grid of candidates is a programming error."""
    req = EstimateRequest("llama-3.1-8b", "h100-sxm", 512, 128, batch=8)
    rep = resolve(req, catalog, catalog.calibration).replica
    phases = static_phases(rep, batch=np.array([1.0, 8.0]), input_len=512, output_len=128)
    with pytest.raises(ValueError, match="single-candidate"):
        op_points(rep, phases[0])
