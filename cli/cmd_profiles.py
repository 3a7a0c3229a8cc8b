"""CLI: edgeplan profiles list / show — the shipped hardware and link profiles.

Must stay instant: only ``edgeplan.hardware_profiles`` (pydantic + tomllib) and rich are imported; never
torch/onnx/onnxruntime (tests/test_profiles.py checks ``sys.modules`` in a subprocess).
"""

from __future__ import annotations

import typer

from edgeplan.cli.common import JsonOpt, console, print_json


def _fmt_num(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="profiles",
        help=(
            "List and show hardware profiles (targets for predict/split) and network links.\n\n"
            "Examples:\n\n"
            "  edgeplan profiles list\n\n"
            "  edgeplan profiles show pi4 --json\n\n"
            "  edgeplan profiles show 4g"
        ),
        no_args_is_help=True,
    )

    @group.command(
        "list",
        help="List the shipped hardware profiles and links.\n\nExample:\n\n  edgeplan profiles list --json",
    )
    def list_cmd(as_json: bool = JsonOpt) -> None:
        from edgeplan.hardware_profiles import list_links, list_profiles, load_link, load_profile

        profiles = [load_profile(n) for n in list_profiles()]
        links = [load_link(n) for n in list_links()]
        if as_json:
            print_json({
                "profiles": [
                    {"name": p.name, "kind": p.kind, "device_type": p.device_type, "description": p.description,
                     "error_band_pct": p.error_band_pct, "price_usd_per_hour": p.price_usd_per_hour}
                    for p in profiles
                ],
                "links": [
                    {"name": lk.name, "description": lk.description, "uplink_mbps": lk.uplink_mbps,
                     "downlink_mbps": lk.downlink_mbps, "rtt_ms": lk.rtt_ms}
                    for lk in links
                ],
            })
            return
        from rich.table import Table

        out = console()
        t = Table(title="Hardware profiles (edgeplan predict --target NAME)")
        for col in ("name", "kind", "device", "fp32 GFLOP/s", "error band", "$/h", "description"):
            t.add_column(col, justify="right" if col in ("fp32 GFLOP/s", "error band", "$/h") else "left")
        for p in profiles:
            t.add_row(p.name, p.kind, p.device_type, _fmt_num(p.peak_gops["fp32"]), f"±{p.error_band_pct:g}%",
                      "-" if p.price_usd_per_hour is None else f"{p.price_usd_per_hour:g}", p.description)
        out.print(t)
        lt = Table(title="Links (--link NAME, or a spec like 20mbps/40ms or 20mbps/5mbps/40ms = down/up/rtt)")
        for col in ("name", "down Mbit/s", "up Mbit/s", "RTT ms", "jitter ms", "radio nJ/bit", "description"):
            lt.add_column(col)
        for lk in links:
            lt.add_row(lk.name, _fmt_num(lk.downlink_mbps), _fmt_num(lk.uplink_mbps), _fmt_num(lk.rtt_ms),
                       _fmt_num(lk.jitter_ms),
                       "unknown" if lk.radio_energy_nj_per_bit is None else _fmt_num(lk.radio_energy_nj_per_bit),
                       lk.description)
        out.print(lt)

    @group.command(
        "show",
        help=(
            "Show one hardware profile or link with the provenance of every number.\n\n"
            "NAME is a shipped profile, a link name, a link spec (20mbps/40ms) or a profile .toml path.\n\n"
            "Examples:\n\n  edgeplan profiles show h100\n\n  edgeplan profiles show my-pi.toml --json"
        ),
    )
    def show_cmd(
        name: str = typer.Argument(..., help="Profile or link name, link spec, or .toml path."),
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.hardware_profiles import list_links, load_link, load_profile

        is_link = name.lower() in list_links() or ("/" in name and not name.endswith(".toml")
                                                   and not name.startswith(("/", ".")))
        obj = load_link(name) if is_link else load_profile(name)
        if as_json:
            print_json({"kind_of_profile": "link" if is_link else "hardware", **obj.model_dump(mode="json")})
            return
        from rich.table import Table

        out = console()
        data = obj.model_dump(mode="python")
        prov = data.pop("provenance")
        t = Table(title=f"{'Link' if is_link else 'Hardware profile'} {obj.name}", show_lines=False)
        t.add_column("field")
        t.add_column("value", overflow="fold")
        t.add_column("provenance", overflow="fold")

        def prov_of(key: str) -> str:
            p = prov.get(key) or prov.get(key.split(".", 1)[0])
            if p is None:
                return ""
            extra = ", ".join(x for x in (p.get("date"), p.get("runtime")) if x)
            return f"{p['kind']}: {p['source']}" + (f" ({extra})" if extra else "")

        for key, value in data.items():
            if isinstance(value, dict) and key not in ("calibration",):
                if key == "efficiency_by_dtype":
                    for dt, sub in value.items():
                        t.add_row(f"{key}.{dt}", ", ".join(f"{k}={_fmt_num(v)}" for k, v in sub.items()),
                                  prov_of(key))
                    continue
                for k, v in value.items():
                    t.add_row(f"{key}.{k}", _fmt_num(v), prov_of(f"{key}.{k}"))
            elif isinstance(value, dict):
                t.add_row(key, ", ".join(f"{k}={v}" for k, v in value.items()), "")
            else:
                t.add_row(key, "-" if value is None else _fmt_num(value), prov_of(key))
        out.print(t)

    app.add_typer(group, name="profiles")
