"""Special functions of the serving model: the normal quantile (`ndtri`), log-gamma (`gammaln`)
and the regularised upper incomplete gamma function (`gammaincc`), each giving exactly the
double scipy.special gives.

`import scipy.special` costs about 0.3 s, a quarter of a `fleetplan plan` run from the shell:
its array-API layer imports numpy.f2py, numpy.testing and numpy's other lazy submodules. So:

* `ndtri` is Cephes' rational approximation, the algorithm scipy.special runs, in Python
  floats (the same double for every probability; tests/test_startup.py compares them);
* `gammaln` and `gammaincc` are scipy.special's own ufuncs, read from the extension module that
  defines them (`scipy.special._special_ufuncs`, which needs numpy only) without running
  scipy.special's package initialisation. Where scipy.special is already imported, where that
  module lacks them (older scipy) or cannot be loaded, they come from `scipy.special` itself.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

# Cephes ndtri: for 0.135 < p < 0.865 (exp(-2) from either end) a rational function of
# (p - 1/2)^2; in the tails one in 1 / sqrt(-2 log p), with another set past x = 8.
_EXP_M2 = 0.13533528323661269189
_SQRT_2PI = 2.50662827463100050242
_P0 = (-5.99633501014107895267e1, 9.80010754185999661536e1, -5.66762857469070293439e1,
       1.39312609387279679503e1, -1.23916583867381258016e0)
_Q0 = (1.95448858338141759834e0, 4.67627912898881538453e0, 8.63602421390890590575e1,
       -2.25462687854119370527e2, 2.00260212380060660359e2, -8.20372256168333339912e1,
       1.59056225126211695515e1, -1.18331621121330003142e0)
_P1 = (4.05544892305962419923e0, 3.15251094599893866154e1, 5.71628192246421288162e1,
       4.40805073893200834700e1, 1.46849561928858024014e1, 2.18663306850790267539e0,
       -1.40256079171354495875e-1, -3.50424626827848203418e-2, -8.57456785154685413611e-4)
_Q1 = (1.57799883256466749731e1, 4.53907635128879210584e1, 4.13172038254672030440e1,
       1.50425385692907503408e1, 2.50464946208309415979e0, -1.42182922854787788574e-1,
       -3.80806407691578277194e-2, -9.33259480895457427372e-4)
_P2 = (3.23774891776946035970e0, 6.91522889068984211695e0, 3.93881025292474443415e0,
       1.33303460815807542389e0, 2.01485389549179081538e-1, 1.23716634817820021358e-2,
       3.01581553508235416007e-4, 2.65806974686737550832e-6, 6.23974539184983293730e-9)
_Q2 = (6.02427039364742014255e0, 3.67983563856160859403e0, 1.37702099489081330271e0,
       2.16236993594496635890e-1, 1.34204006088543189037e-2, 3.28014464682127739104e-4,
       2.89247864745380683936e-6, 6.79019408009981274425e-9)


def _poly(x: float, coefs: tuple[float, ...], monic: bool = False) -> float:
    """Horner's rule, highest power first; `monic`: with a leading coefficient 1 not listed."""
    value = x + coefs[0] if monic else coefs[0]
    for c in coefs[1:]:
        value = value * x + c
    return value


def ndtri(p: float) -> float:
    """The standard normal quantile: x with Phi(x) = p (-inf at 0, inf at 1, NaN outside)."""
    if p == 0.0:
        return -math.inf
    if p == 1.0:
        return math.inf
    if not 0.0 < p < 1.0:
        return math.nan
    lower = True
    y = p
    if y > 1.0 - _EXP_M2:
        y = 1.0 - y
        lower = False
    if y > _EXP_M2:
        y -= 0.5
        y2 = y * y
        x = y + y * (y2 * _poly(y2, _P0) / _poly(y2, _Q0, monic=True))
        return x * _SQRT_2PI
    x = math.sqrt(-2.0 * math.log(y))
    x0 = x - math.log(x) / x
    z = 1.0 / x
    if x < 8.0:
        x1 = z * _poly(z, _P1) / _poly(z, _Q1, monic=True)
    else:
        x1 = z * _poly(z, _P2) / _poly(z, _Q2, monic=True)
    x = x0 - x1
    return -x if lower else x


def _extension(package: str, name: str) -> ModuleType:
    """The compiled module `package.name` of an installed package, loaded from its file
    without importing `package` (no package initialisation runs)."""
    full = f"{package}.{name}"
    loaded = sys.modules.get(full)
    if loaded is not None:
        return loaded
    top, _, rest = package.partition(".")
    root = importlib.util.find_spec(top)
    if root is None or not root.submodule_search_locations:
        raise ImportError(f"{top} is not installed as a package")
    folder = Path(next(iter(root.submodule_search_locations)), *rest.split(".") if rest else ())
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = folder / f"{name}{suffix}"
        if path.is_file():
            spec = importlib.util.spec_from_file_location(full, path)
            if spec is None or spec.loader is None:
                break
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ImportError(f"no compiled module {full}")


def _gamma_ufuncs() -> tuple[np.ufunc, np.ufunc]:
    """scipy.special's `gammaincc` and `gammaln` ufuncs, preferably without importing
    scipy.special."""
    if "scipy.special" not in sys.modules:
        try:
            module = _extension("scipy.special", "_special_ufuncs")
            found = (getattr(module, "gammaincc", None), getattr(module, "gammaln", None))
        except Exception:  # whatever stops the shortcut, the supported import remains
            found = (None, None)
        if isinstance(found[0], np.ufunc) and isinstance(found[1], np.ufunc):
            return found[0], found[1]
    import scipy.special

    return scipy.special.gammaincc, scipy.special.gammaln


gammaincc, gammaln = _gamma_ufuncs()
"""gammaincc(a, x): the regularised upper incomplete gamma function Q(a, x); gammaln(x): the
log of the absolute value of the gamma function. Both are numpy ufuncs (arrays broadcast)."""
