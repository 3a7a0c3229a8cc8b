"""CLI: edgeplan split (plan where to cut a model between device, edge server and cloud) and
edgeplan bundle verify (check a bundle's files and that its parts reproduce the source model)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, ShapeOpt, TrustOpt, WeightsOpt, console, err_console, print_json


def _fmt_bytes(n: int) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    if n >= 1e3:
        return f"{n / 1e3:.1f} kB"
    return f"{n} B"


def _cuts_text(plan, limit: int = 3) -> str:
    names = [c.name for c in plan.cut_tensors]
    if not names:
        return "-"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")


def register(app: typer.Typer) -> None:
    @app.command(
        "split",
        help=(
            "Plan where to cut MODEL between an edge device and the cloud (or device -> edge server -> cloud).\n\n"
            "The cut is exact over every valid cut of the graph (min-cut over all downward-closed node sets, "
            "checked against brute force in the tests), for the objective chosen. The raw input never leaves "
            "the device unless --allow-raw-input. All numbers are predicted from the hardware profiles (with "
            "their error band), not measured. Also prints the network schedule: the best cut per uplink "
            "bandwidth from 0.5 to 1000 Mbit/s. --out writes the best plan as a verified bundle.\n\n"
            "Examples:\n\n"
            "  edgeplan split model.onnx --edge pi4 --cloud t4 --link 4g\n\n"
            "  edgeplan split model.onnx --tiers pi4,jetson-orin-nano,a100 --link 4g,ethernet --objective energy\n\n"
            "  edgeplan split edgeplan.compressor.archs:resnet18_like --edge pi4 --cloud t4 --link 20mbps/40ms "
            "--keep-on-device 2 --out bundle/ --json"
        ),
    )
    def split(
        model: str = typer.Argument(..., help="Model file (.onnx/.pt/.pt2) or pkg.module:function."),
        edge: str = typer.Option("pi4", "--edge", help="Edge device profile (name or .toml)."),
        cloud: str = typer.Option("t4", "--cloud", help="Cloud profile (name or .toml)."),
        link: str = typer.Option("4g", "--link", help="Link name or spec (20mbps/40ms); comma-separated, one per hop."),
        tiers: str = typer.Option(None, "--tiers", help="device,edge-server,cloud profiles (overrides --edge/--cloud)."),
        objective: str = typer.Option("latency", "--objective", help="latency, energy (device) or cost (cloud $)."),
        keep_on_device: int = typer.Option(0, "--keep-on-device", min=0,
                                           help="No tensor that passed fewer than N weighted layers leaves the device."),
        keep_layer: str = typer.Option(None, "--keep-layer", help="This node (and all before it) runs on the device."),
        memory_budget_mb: float = typer.Option(None, "--memory-budget-mb", min=0.0,
                                               help="Device memory budget in MB (10^6 bytes): weights + live activations."),
        wire: str = typer.Option("fp32", "--wire", help="Dtype of the cut tensors on the wire: fp32, fp16, int8."),
        allow_raw_input: bool = typer.Option(False, "--allow-raw-input",
                                             help="Allow sending the raw input (cloud-only plans become legal)."),
        request_overhead_ms: float = typer.Option(
            None, "--request-overhead-ms", min=0.0,
            help="The split runtime's own cost per request (HTTP, wire encoding, Python), charged once per "
                 "network boundary a plan uses. Default: the value measured on edgeplan's 2-core x86 development "
                 "machine (printed with the plans); slower devices pay more: measure yours with "
                 "edgeplan.planner.runtime_overhead.measure_request_overhead_ms (docs/runtime.md)."),
        serialise_mb_per_s: float = typer.Option(
            None, "--serialise-mb-per-s",
            help="The split runtime's cost per byte of cut tensor beyond the link (wire encode/decode, HTTP body "
                 "copies), as a rate in MB/s: a cut of B bytes costs B / rate. Default: the value measured on "
                 "edgeplan's development machine (printed with the plans); measure yours with "
                 "edgeplan.planner.runtime_overhead.measure_runtime_costs (docs/runtime.md)."),
        batch: int = typer.Option(1, "--batch", min=1, help="Batch size."),
        out: Path = typer.Option(None, "--out", "-o", help="Write the best plan as a bundle into this folder."),
        force: bool = typer.Option(False, "--force", help="Replace an existing bundle folder."),
        schedule_parts: bool = typer.Option(False, "--schedule-parts",
                                            help="Also write the parts of every schedule segment into the bundle."),
        input_shape: str = ShapeOpt,
        trust_model: bool = TrustOpt,
        weights: Path = WeightsOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.hardware_profiles.errors import ConfigError
        from edgeplan.planner.split import (DEFAULT_REQUEST_OVERHEAD_MS, DEFAULT_SERIALISE_MB_PER_S, SplitOptions,
                                            split_model)

        tier_names = [t.strip() for t in tiers.split(",")] if tiers else [edge, cloud]
        if len(tier_names) not in (2, 3) or not all(tier_names):
            raise ConfigError("--tiers takes 2 or 3 profile names: device,[edge-server,]cloud")
        links = [s.strip() for s in link.split(",") if s.strip()]
        if len(tier_names) == 3 and len(links) == 1:
            links.append("ethernet")
        options = SplitOptions(
            wire_dtype=wire, raw_input_may_leave=allow_raw_input, keep_on_device_layers=keep_on_device,
            keep_on_device_node=keep_layer,
            memory_budget_bytes=None if memory_budget_mb is None else int(memory_budget_mb * 1e6),
            request_overhead_ms=DEFAULT_REQUEST_OVERHEAD_MS if request_overhead_ms is None else request_overhead_ms,
            serialise_mb_per_s=DEFAULT_SERIALISE_MB_PER_S if serialise_mb_per_s is None else serialise_mb_per_s,
        )
        status = err_console()
        result = split_model(
            model, tiers=tier_names, links=links, objective=objective, options=options, trust_model=trust_model,
            weights=None if weights is None else str(weights), input_shape=input_shape, batch=batch, out_dir=out,
            overwrite=force, schedule_parts=schedule_parts,
            progress=None if as_json else (lambda msg: status.print(f"[dim]{msg}...[/dim]")),
        )
        if as_json:
            print_json(result.to_dict())
            return
        _render(result)

    bundle_app = typer.Typer(help="Work with edgeplan bundles (edge.onnx + cloud.onnx + manifest.json).",
                             no_args_is_help=True)

    @bundle_app.command(
        "verify",
        help=(
            "Verify a bundle: manifest schema, sha256 of every file, and that the composed parts reproduce the "
            "source model's recorded reference outputs (ONNX Runtime CPU). Exit code 1 on any mismatch.\n\n"
            "Example:\n\n  edgeplan bundle verify edgeplan-out/bundle"
        ),
    )
    def verify(
        bundle_dir: Path = typer.Argument(..., help="Bundle folder (holds manifest.json)."),
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.bundle import verify_bundle

        rep = verify_bundle(bundle_dir)
        if as_json:
            print_json(rep.to_dict())
            return
        msg = (f"[green]ok[/green] {rep.path}: {rep.files_checked} files checksummed, {rep.outputs_checked} "
               f"output(s) reproduced (max abs error {rep.max_abs_error:.2e}, measured with ORT CPU)")
        if rep.wire_dtype != "fp32":
            msg += f"; with {rep.wire_dtype} on the wire: max abs error {rep.wire_max_abs_error:.2e}"
        if rep.schedule_parts_checked:
            msg += f"; {rep.schedule_parts_checked} schedule segment(s) checked"
        console().print(msg)

    app.add_typer(bundle_app, name="bundle")


def _render(result) -> None:
    from rich.table import Table

    out = console()
    plans = result.plans
    band = max((t.error_band_pct for t in result.problem.tiers), default=0.0)
    title = (f"Split plans for {result.onnx_path.name}: {' -> '.join(t.name for t in result.problem.tiers)} over "
             f"{', '.join(lk.name for lk in result.problem.links)} (predicted, ±{band:g}%; objective "
             f"{plans.objective.name})")
    t = Table(title=title)
    for col in ("plan", "nodes", "cut", "ms", "device mJ", "$/1k", "sent", "device FLOPs", "note"):
        t.add_column(col, justify="right" if col not in ("plan", "cut", "note", "nodes") else "left",
                     no_wrap=col in ("plan", "ms"), min_width=12 if col == "plan" else None)
    notes: list[str] = []
    for p in plans.all():
        name = f"[bold]{p.name}[/bold]" if p is plans.best else p.name
        if not p.feasible:
            note = "infeasible"
        elif p.sends_raw_input:
            note = "sends raw input"
        else:
            note = "exact" if p.exact else ""
        notes += [f"{p.name}: {n}" for n in p.notes]
        t.add_row(name, "/".join(str(p.nodes_on(k)) for k in range(len(p.tier_names))), _cuts_text(p, 2),
                  f"{p.latency_ms:.3g}", f"{p.energy_mj:.3g}", f"{p.cost_usd_per_1k:.3g}", _fmt_bytes(p.transfer_bytes),
                  f"{100 * p.device_compute_share:.1f}%", note)
    out.print(t)
    for n in notes:
        out.print(f"[dim]{n}[/dim]")
    best = plans.best
    opts = result.problem.options
    shown = best if best.is_split else plans.best_offload
    if shown is not None and max(shown.node_tiers, default=0) > 0:
        comp = " + ".join(f"{n} {ms:.3g}" for n, ms in zip(shown.tier_names, shown.tier_latency_ms) if ms)
        out.print(f"[dim]{shown.name}, predicted: {shown.latency_ms:.3g} ms = compute ({comp}) + network "
                  f"{shown.network_ms:.3g} + runtime request overhead {shown.request_overhead_ms:.3g} ms[/dim]")
    from edgeplan.planner.split import request_overhead_provenance, serialise_provenance

    out.print(f"[dim]Every plan that uses the network pays a runtime request overhead of "
              f"{opts.request_overhead_ms:g} ms per boundary ({request_overhead_provenance(opts)}); its cut tensors "
              f"are serialised at {opts.serialise_mb_per_s:g} MB/s ({serialise_provenance(opts)}).[/dim]")
    if best.latency_ms > plans.device_only.latency_ms and best is not plans.device_only:
        out.print(f"[yellow]note:[/yellow] the best plan for {plans.objective.name} is slower than device-only.")
    if result.schedule is not None:
        s = Table(title=f"Network schedule: best cut per uplink bandwidth of {result.problem.links[0].name} "
                        f"({'exact breakpoints' if result.schedule.exact else 'approximate'})")
        for col in ("uplink Mbit/s", "nodes on device", "cut tensors", "sent", "latency ms (at range ends)"):
            s.add_column(col)
        for seg in result.schedule.segments:
            cut = ", ".join(seg.cut_tensors[:3]) + (f" (+{len(seg.cut_tensors) - 3})" if len(seg.cut_tensors) > 3 else "")
            s.add_row(f"{seg.min_mbps:.3g} - {seg.max_mbps:.4g}", str(seg.nodes_on_device), cut or "-",
                      _fmt_bytes(seg.transfer_bytes), f"{seg.latency_ms_at_min:.2f} - {seg.latency_ms_at_max:.2f}")
        out.print(s)
    out.print(f"[dim]Predicted, not measured: {result.provenance}. Planner time {result.planner_ms:.0f} ms "
              f"(measured, this machine).[/dim]")
    if result.bundle_dir is not None:
        out.print(f"bundle written: {result.bundle_dir} (verified: parts reproduce the source model)")
