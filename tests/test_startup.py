"""Start-up stays cheap: `fleetplan` loads what the command it runs needs, and the serving
model's special functions come without `import scipy.special` (0.3 s) yet give scipy's numbers.
Structural checks in fresh interpreters, not timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# Modules no planning run needs: training, measurements and calibration (scipy.optimize),
# simulation, plots, the spreadsheet add-in.
NOT_FOR_PLAN = ("scipy.special", "scipy.optimize", "scipy.stats", "matplotlib", "xlwings",
                "fleetplan.plan.train", "fleetplan.plan.train_spec", "fleetplan.models.training",
                "fleetplan.solvers.training", "fleetplan.solvers.calibration",
                "fleetplan.solvers.training_calibration", "fleetplan.plan.validate",
                "fleetplan.plan.measurements", "fleetplan.plan.plots", "fleetplan.plan.excel",
                "fleetplan.plan.compare", "fleetplan.plan.describe")


def _loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code` (its stdout is discarded)."""
    script = ("import contextlib, io, json, sys\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              + "".join(f"    {line}\n" for line in code.splitlines())
              + "print(json.dumps(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_cli_import_loads_no_model_solver_or_numpy() -> None:
    # `fleetplan --help`, `fleetplan catalog ...` and argument errors need none of them.
    loaded = _loaded_after("import fleetplan.plan.cli")
    heavy = {"numpy", "scipy", "pulp", "highspy", "pydantic", "matplotlib"}
    assert not {m.partition(".")[0] for m in loaded} & heavy
    assert not {m for m in loaded if m.startswith(("fleetplan.models", "fleetplan.solvers"))}
    assert not set(NOT_FOR_PLAN) & loaded


def test_plan_command_loads_the_planning_path_only() -> None:
    spec = EXAMPLES / "melange-capacity-table.yaml"
    loaded = _loaded_after(
        "from fleetplan.plan.cli import main\n"
        f"sys.argv = ['fleetplan', 'plan', {str(spec)!r}, '--format', 'json']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n")
    assert "fleetplan.plan.report" in loaded  # it did plan
    assert not set(NOT_FOR_PLAN) & loaded
    # PuLP serves the placement ILPs only; this plan's placements need none.
    assert "pulp" not in loaded


def test_serving_model_does_not_import_scipy_special() -> None:
    loaded = _loaded_after("import fleetplan.models.queueing\n"
                           "import fleetplan.models.disaggregation")
    assert "scipy.special" not in loaded
    assert "numpy.f2py" not in loaded  # what scipy.special's array-API layer drags in


_SAME_AS_SCIPY = """
import math
import sys

import numpy as np

from fleetplan.models import special

assert "scipy.special" not in sys.modules
import scipy.special as ss
from scipy.stats import poisson

rng = np.random.default_rng(7)
# Both ufuncs over the arguments the queueing model gives them: integer and real shapes, from
# tiny to thousands, around a = x (the asymptotic branch) and far from it, and the edges.
a = np.concatenate([np.arange(0.0, 3000.0), rng.uniform(0.0, 50.0, 20000),
                    10.0 ** rng.uniform(-3.0, 4.0, 20000)])
x = np.concatenate([a[:3000] * rng.uniform(0.5, 1.5, 3000), rng.uniform(0.0, 60.0, 20000),
                    10.0 ** rng.uniform(-12.0, 4.0, 20000)])
for got, want in ((special.gammaincc(a, x), ss.gammaincc(a, x)),
                  (special.gammaln(a), ss.gammaln(a)),
                  (special.gammaln(x), ss.gammaln(x))):
    assert np.array_equal(got, want, equal_nan=True)
assert np.array_equal(special.gammaincc(np.array([[1.0], [7.0]]), np.array([0.5, 3.0])),
                      ss.gammaincc(np.array([[1.0], [7.0]]), np.array([0.5, 3.0])))

# ndtri: Cephes' algorithm, as scipy runs it, to the last bit: both rational pieces, both
# tails, the quantiles fleetplan reports and the ends.
p = np.concatenate([rng.uniform(0.0, 1.0, 50000), 10.0 ** rng.uniform(-300.0, 0.0, 20000),
                    1.0 - 10.0 ** rng.uniform(-16.0, 0.0, 20000),
                    [0.5, 0.9, 0.99, 0.1, 0.01, 0.999, math.exp(-2.0), 1.0 - math.exp(-2.0),
                     5e-324, 1e-300, 1.0 - 2.0**-53, 0.0, 1.0, -0.5, 1.5, math.nan]])
got = np.array([special.ndtri(float(q)) for q in p])
assert np.array_equal(got, ss.ndtri(p), equal_nan=True)

# scipy.special and scipy.stats still work, and agree, once the ufuncs came in by their file.
assert math.isclose(poisson.cdf(3, 2.5), ss.gammaincc(4.0, 2.5), rel_tol=1e-12)
from scipy.special import _special_ufuncs  # noqa: F401
print("ok")
"""


def test_special_functions_are_scipys_to_the_last_bit() -> None:
    result = subprocess.run([sys.executable, "-c", _SAME_AS_SCIPY], capture_output=True,
                            text=True, check=False, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_special_functions_fall_back_to_scipy_special() -> None:
    # With scipy.special imported first (or the extension unloadable), its own ufuncs serve.
    code = ("import scipy.special as ss\n"
            "from fleetplan.models import special\n"
            "assert special.gammaincc is ss.gammaincc and special.gammaln is ss.gammaln\n"
            "from fleetplan.models.special import _extension\n"
            "try:\n"
            "    _extension('scipy.special', 'no_such_module')\n"
            "except ImportError:\n"
            "    print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False, cwd=REPO.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
