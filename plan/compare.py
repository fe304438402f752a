"""`fleetplan compare`: two plan reports side by side with CI gates, or one spec planned with
each accelerator alone and with all of them."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hardware.errors import SpecError
from .files import read_text
from .output import parallelism_label

# Metrics a gate may name, and how each is read from a report (None when absent).
METRICS = ("cost", "cost_per_mtok", "accelerators", "power", "p99_ttft", "p99_tpot", "p99_e2e")


def _worst(report: dict[str, Any], key: str) -> float | None:
    values = [w["predicted"][key] for w in report.get("workloads", [])
              if w.get("predicted") and w["predicted"].get(key) is not None]
    return max(values) if values else None


def metric(report: dict[str, Any], name: str) -> float | None:
    """A headline figure of a plan report; latencies are the worst over its workloads."""
    if report.get("status") == "infeasible" and name != "accelerators":
        return math.inf
    if name == "cost":
        value = report.get("cost_usd_h")
        return None if value is None else float(value)
    if name == "cost_per_mtok":
        value = report.get("cost_usd_per_million_output_tokens")
        return None if value is None else float(value)
    if name == "accelerators":
        return float(report["accelerators"])
    if name == "power":
        value = report.get("power_w")
        return None if value is None else float(value)
    return _worst(report, {"p99_ttft": "ttft_p99_s", "p99_tpot": "tpot_p99_s",
                           "p99_e2e": "e2e_p99_s"}[name])


@dataclass(frozen=True)
class Gate:
    """Fail when `metric` grows by more than `limit` (relative when `relative`)."""

    metric: str
    limit: float
    relative: bool
    text: str

    def fails(self, old: float | None, new: float | None) -> bool:
        if old is None or new is None:
            return False
        if math.isinf(new) and not math.isinf(old):
            return True
        if not (math.isfinite(old) and math.isfinite(new)):
            return False
        allowed = old * (1.0 + self.limit) if self.relative else old + self.limit
        return new > allowed + 1e-12 * max(abs(old), 1.0)


_GATE = re.compile(r"^(?P<metric>[a-z0-9_]+):(?P<sign>\+)?(?P<value>\d+(\.\d+)?)(?P<pct>%)?$")


def parse_gate(text: str) -> Gate:
    """"cost:+5%" (relative) or "accelerators:+2" (absolute)."""
    m = _GATE.match(text.strip())
    if m is None or m["metric"] not in METRICS:
        raise SpecError(f"expected METRIC:+N% or METRIC:+N with METRIC one of "
                        f"{', '.join(METRICS)}; got {text!r}", field="fail-on")
    value = float(m["value"])
    return Gate(m["metric"], value / 100.0 if m["pct"] else value, bool(m["pct"]), text)


def load_report(path: Path) -> dict[str, Any]:
    """A plan report written by `fleetplan plan --format json`."""
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise SpecError(f"malformed JSON: {err.msg}", file=str(path), line=err.lineno) from None
    if not isinstance(data, dict) or "schema_version" not in data or "allocations" not in data:
        raise SpecError("not a fleetplan plan report (no schema_version/allocations)",
                        file=str(path), line=1)
    if str(data["schema_version"]).split(".")[0] != "1":
        raise SpecError(f"schema_version {data['schema_version']} is not one this version "
                        "reads (1.x)", file=str(path), field="schema_version")
    return data


def diff(old: dict[str, Any], new: dict[str, Any], gates: list[Gate]) -> dict[str, Any]:
    """Headline metrics of two reports, their changes, per-type counts and the gates' verdict."""
    rows = []
    for name in METRICS:
        a, b = metric(old, name), metric(new, name)
        change = None
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a:
            change = b / a - 1.0
        rows.append({"metric": name, "old": a, "new": b, "change": change})

    def counts(report: dict[str, Any]) -> dict[str, int]:
        out: dict[str, int] = {}
        for alloc in report.get("allocations", []):
            out[alloc["accelerator"]] = out.get(alloc["accelerator"], 0) + alloc["count"]
        return out

    old_c, new_c = counts(old), counts(new)
    fleet = [{"accelerator": k, "old": old_c.get(k, 0), "new": new_c.get(k, 0)}
             for k in sorted(set(old_c) | set(new_c))]
    failed = [g.text for g in gates if g.fails(metric(old, g.metric), metric(new, g.metric))]
    return {"metrics": rows, "accelerators": fleet, "status": {"old": old.get("status"),
                                                              "new": new.get("status")},
            "gates": [g.text for g in gates], "failed": failed}


def option_pools(accelerators: list[str]) -> list[list[str]]:
    """Each accelerator alone, then all of them together (when there are several)."""
    return [[n] for n in accelerators] + ([accelerators] if len(accelerators) > 1 else [])


def option_row(pool: list[str], report: dict[str, Any]) -> dict[str, Any]:
    """One option of `compare SPEC --accelerators`: a plan report in one line."""
    feasible = report["status"] != "infeasible"
    return {"pool": "+".join(pool), "status": report["status"],
            "cost_usd_h": report["cost_usd_h"] if feasible else None,
            "accelerators": report["accelerators"],
            "cost_usd_per_million_output_tokens":
                report.get("cost_usd_per_million_output_tokens"),
            "allocations": [f"{a['count']}x {a['accelerator']} {parallelism_label(a)} "
                            f"{a['precision']}" for a in report["allocations"]],
            "p99_ttft_s": _worst(report, "ttft_p99_s"),
            "p99_tpot_s": _worst(report, "tpot_p99_s")}
