"""`fleetplan train estimate` and `fleetplan train plan`. `fleetplan` registers these commands at
every start, so each imports the training models when it runs, and annotations are objects,
not strings, as in `cli`."""

from pathlib import Path
from typing import Annotated

import typer

from ..hardware.catalog import load_catalog
from .output import Format, FormatOpt, OutOpt, emit, fmt_si, render_table, to_json

train_app = typer.Typer(no_args_is_help=True, help="Training: step time, MFU and memory of "
                        "a layout; the accelerators, count and layout for a token budget.")

Degree = Annotated[int, typer.Option(min=1)]
GIB = 2**30


@train_app.command("estimate")
def train_estimate(
        model: Annotated[str, typer.Option(help="Catalog model id or config.json path.")],
        accelerator: Annotated[str, typer.Option(help="Catalog accelerator id.")],
        count: Annotated[int, typer.Option(min=1, help="Accelerators in the job.")],
        global_batch: Annotated[int, typer.Option(min=1, help="Sequences per optimizer step.")],
        seq_len: Annotated[int, typer.Option(min=1, help="Tokens per sequence.")],
        tp: Degree = 1, pp: Degree = 1, cp: Degree = 1, ep: Degree = 1,
        vp: Annotated[int, typer.Option(min=1, help="Virtual pipeline stages per device.")] = 1,
        dp: Annotated[int | None, typer.Option(min=1, help="Data-parallel degree (default: "
                                               "count / (tp x pp x cp)).")] = None,
        micro_batch: Annotated[int, typer.Option(min=1, help="Sequences per micro-batch.")] = 1,
        precision: Annotated[str, typer.Option(help="Format of the weight GEMMs.")] = "bf16",
        recompute: Annotated[str | None, typer.Option(
            help="none, selective or full (default: the framework's).")] = None,
        zero: Annotated[int | None, typer.Option(min=0, max=3, help="ZeRO stage; 1 is the "
                                                 "distributed optimizer, 3 is FSDP.")] = None,
        offload_optimizer: Annotated[bool, typer.Option(
            help="Keep optimizer states and the Adam step in host memory.")] = False,
        offload_activations: Annotated[float, typer.Option(
            min=0.0, max=1.0, help="Fraction of layers whose activations go to host memory."
        )] = 0.0,
        engine: Annotated[str, typer.Option(help="Training framework (catalog "
                                            "training_engines.yaml).")] = "megatron",
        calibration: Annotated[Path | None, typer.Option(
            help="Calibration YAML from `fleetplan calibrate`.")] = None,
        plot: Annotated[Path | None, typer.Option(
            help="Draw the memory breakdown per device to FILE.png or FILE.svg (needs the "
                 "plot extra).")] = None,
        fmt: FormatOpt = Format.table, out: OutOpt = None) -> None:
    """Step time, tokens/s, model TFLOP/s, MFU and memory of one training layout."""
    if plot is not None:
        from .plots import check_target

        check_target(plot)
    from .api import train_estimate

    report = dict(train_estimate(
        model, accelerator, count=count, global_batch=global_batch, seq_len=seq_len, tp=tp,
        pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=micro_batch, precision=precision,
        recompute=recompute, zero=zero, offload_optimizer=offload_optimizer,
        offload_activations=offload_activations, engine=engine,
        calibration=calibration).report)
    if plot is not None:
        from .plots import render_memory_breakdown

        mem = report["memory"]
        parts = {k: mem[k] for k in ("weights", "gradients", "optimizer", "activations",
                                     "logits", "reserve")}
        lay = report["layout"]
        label = (f"tp{lay['tp']} pp{lay['pp']} dp{lay['dp']} cp{lay['cp']} "
                 f"mb{lay['micro_batch']} {lay['recompute']}")
        render_memory_breakdown([(label, parts)], mem["capacity"], plot)
    if fmt == Format.json:
        emit(to_json(report), out)
    else:
        lay = report["layout"]
        mem = report["memory"]
        rows = [["layout", f"tp{lay['tp']} pp{lay['pp']} dp{lay['dp']} cp{lay['cp']} "
                           f"ep{lay['ep']} vp{lay['vp']}, micro-batch {lay['micro_batch']} x "
                           f"{lay['microbatches']}, recompute {lay['recompute']}, "
                           f"ZeRO {lay['zero']}"],
                ["step time", fmt_si(report["step_time_s"], "s")],
                ["tokens/s per accelerator", f"{report['tokens_per_s_per_accelerator']:,.0f}"],
                ["model TFLOP/s per accelerator",
                 f"{report['model_tflops_per_accelerator']:,.0f}"],
                ["MFU", f"{report['mfu']:.1%} of {report['peak_tflops']:,.0f} TFLOP/s"],
                ["bound", report["bound"]],
                ["memory", f"{mem['total'] / GIB:.1f} of {mem['capacity'] / GIB:.1f} GiB "
                           f"({'fits' if report['fits'] else 'does NOT fit'})"]]
        rows += [[f"  {k}", f"{mem[k] / GIB:.1f} GiB"] for k in
                 ("weights", "gradients", "optimizer", "activations", "logits", "reserve")]
        rows += [[f"  time: {k}", fmt_si(v, "s")]
                 for k, v in report["time_breakdown_s"].items() if v > 0]
        rows += [["note", n] for n in report["notes"]]
        render_table(f"{report['model']} on {report['count']}x {report['accelerator']} "
                     f"({report['precision']}, {report['engine']})", ["", "value"], rows, fmt,
                     out)
    if not report["fits"]:
        raise typer.Exit(1)


@train_app.command("plan")
def train_plan(spec: Annotated[Path, typer.Argument(help="Training spec (YAML).")],
               fmt: FormatOpt = Format.table, out: OutOpt = None) -> None:
    """Cheapest (or fastest) accelerator type, count and layout that trains the spec's tokens
    within its deadline and budget; exit 1 when none does (the closest is reported)."""
    from .train import plan_training_report
    from .train_spec import load_train_spec

    catalog = load_catalog()
    report = plan_training_report(load_train_spec(spec), catalog)
    if fmt == Format.json:
        emit(to_json(report), out)
    else:
        rows = []
        for o in report["pareto"]:
            lay = o["layout"]
            mark = "*" if report["chosen"] and o == report["chosen"] else ""
            rows.append([mark, o["accelerator"], str(o["devices"]), o["precision"],
                         f"tp{lay['tp']} pp{lay['pp']} dp{lay['dp']} cp{lay['cp']} "
                         f"ep{lay['ep']} vp{lay['vp']} mb{lay['micro_batch']} "
                         f"gb{lay['global_batch']} {lay['recompute']}",
                         f"{o['time_days']:.1f}",
                         "-" if o["cost_usd"] is None else f"{o['cost_usd']:,.0f}",
                         f"{o['mfu']:.1%}", "yes" if o["meets"] else "no"])
        picked = report["chosen"] or report["closest"]
        title = (f"train plan {spec.name}: {report['status']}"
                 + (f", {picked['accelerator']} x{picked['devices']} in "
                    f"{picked['time_days']:.1f} days" if picked else ""))
        render_table(title, ["", "accelerator", "count", "precision", "layout", "days",
                             "cost USD", "MFU", "meets"], rows, fmt, out)
    if report["status"] != "optimal":
        raise typer.Exit(1)
