"""CLI: edgeplan serve (the cloud part of a bundle over HTTP(S)) and edgeplan run (the device part, with
local fall-back). The library is planner/runtime_server.py and planner/runtime_client.py; the wire format
is planner/wire.py (docs/runtime.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgeplan.cli.common import JsonOpt, console, err_console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "serve",
        help=(
            "Serve the cloud part of BUNDLE: POST /v1/infer takes the cut tensors (edgeplan wire format EPW1), "
            "runs cloud.onnx with ONNX Runtime and returns the outputs; GET /v1/health returns the bundle's "
            "manifest sha256. Bearer token (constant-time check) with --token-file, TLS with --tls-cert/--tls-key, "
            "request size limit with --max-request-mb. Bad requests get 400/401/411/413 and the server keeps "
            "serving. Stop with Ctrl-C.\n\n"
            "Example:\n\n  edgeplan serve bundle/ --port 8471 --token-file token.txt"
        ),
    )
    def serve(
        bundle_dir: Path = typer.Argument(..., help="Bundle folder (from edgeplan split --out)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8471, "--port", min=0, max=65535, help="TCP port (0 picks a free one)."),
        token_file: Path = typer.Option(None, "--token-file", help="File whose first line is the bearer token."),
        tls_cert: Path = typer.Option(None, "--tls-cert", help="PEM certificate (with --tls-key) to serve HTTPS."),
        tls_key: Path = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
        max_request_mb: float = typer.Option(64.0, "--max-request-mb", min=0.001,
                                             help="Largest request body accepted, in MB (10^6 bytes)."),
    ) -> None:
        from edgeplan.hardware_profiles.errors import ConfigError
        from edgeplan.planner.runtime_server import make_server, read_token_file

        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        token = read_token_file(token_file) if token_file is not None else None
        err = err_console()
        srv = make_server(bundle_dir, host, port, token=token,
                          tls=(tls_cert, tls_key) if tls_cert is not None else None,
                          max_request_bytes=int(max_request_mb * 1e6),
                          on_event=lambda msg: err.print(f"[dim]{msg}[/dim]", highlight=False))
        h = srv.service.health()
        err.print(f"serving {bundle_dir} (plan {h['plan']}, manifest {h['manifest_sha256'][:12]}...) at {srv.url}"
                  f"{' with a bearer token' if token else ' WITHOUT a token'}; Ctrl-C stops", soft_wrap=True)
        try:
            srv.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            srv.server_close()

    @app.command(
        "run",
        help=(
            "Run BUNDLE on INPUT: the device part here, the rest on an `edgeplan serve` at --cloud. If the server "
            "cannot be reached within --timeout the device finishes the inference itself and says so "
            "(\"fell back to local: ...\"). --local-only runs the whole model here. With schedule parts in the "
            "bundle the client measures the uplink and switches to the cut the bundle's network schedule "
            "prescribes. --repeat N prints measured latency percentiles and throughput.\n\n"
            "Examples:\n\n  edgeplan run bundle/ --input x.npy --cloud http://10.0.0.5:8471 --token-file token.txt "
            "-o y.npy\n\n  edgeplan run bundle/ --input x.npy --local-only --repeat 50 --json"
        ),
    )
    def run(
        bundle_dir: Path = typer.Argument(..., help="Bundle folder (from edgeplan split --out)."),
        input_file: Path = typer.Option(..., "--input", help=".npy (one input) or .npz keyed by input name."),
        cloud: str = typer.Option(None, "--cloud", help="URL of the edgeplan serve, e.g. http://host:8471."),
        token_file: Path = typer.Option(None, "--token-file", help="File whose first line is the bearer token."),
        out: Path = typer.Option(None, "--out", "-o", help="Write the output to this .npy (.npz for several)."),
        local_only: bool = typer.Option(False, "--local-only", help="Run the whole model on this device."),
        repeat: int = typer.Option(1, "--repeat", min=1, help="Run N times; print p50/p90/p99 and throughput."),
        timeout: float = typer.Option(5.0, "--timeout", min=0.01, help="Seconds to wait for the server."),
        cafile: Path = typer.Option(None, "--cafile", help="CA certificate to trust for an https:// --cloud."),
        as_json: bool = JsonOpt,
    ) -> None:
        from edgeplan.planner.runtime_client import run_bundle
        from edgeplan.planner.runtime_server import read_token_file

        token = read_token_file(token_file) if token_file is not None else None
        rep = run_bundle(bundle_dir, input_file, cloud, token=token, output_path=out, local_only=local_only,
                         repeat=repeat, timeout_s=timeout, cafile=cafile)
        if as_json:
            print_json(rep.to_dict())
            return
        c = console()
        r = rep.result
        how = {"split": f"split (cut variant {r.variant})", "local": "locally",
               "local-fallback": "locally after a failed cloud request"}[r.mode]
        line = f"ran {how}: {r.total_ms:.2f} ms (measured, wall clock)"
        if r.mode == "split":
            line += (f"; device {r.device_ms:.2f} ms, network {r.network_ms:.2f} ms, server {r.server_ms:.2f} ms; "
                     f"sent {r.sent_bytes} B, received {r.received_bytes} B")
        c.print(line, highlight=False)
        if r.reason:
            c.print(f"[yellow]{r.reason}[/yellow]", highlight=False)
        if rep.adaptive_note and not local_only:
            c.print(f"[dim]{rep.adaptive_note}[/dim]", highlight=False)
        if rep.repeat is not None:
            d = rep.repeat.to_dict()
            c.print(f"{d['n']} runs (measured, sequential): p50 {d['p50_ms']:.2f} ms, p90 {d['p90_ms']:.2f} ms, "
                    f"p99 {d['p99_ms']:.2f} ms; throughput {d['throughput_per_s']:.1f}/s; modes {d['modes']}",
                    highlight=False)
            for why in d["reasons"]:
                c.print(f"[yellow]{why}[/yellow]", highlight=False)
        if rep.output_path is not None:
            c.print(f"output written: {rep.output_path}", highlight=False)
        else:
            for name, v in r.outputs.items():
                c.print(f"{name}: {list(v.shape)} {v.dtype.name}", highlight=False)
