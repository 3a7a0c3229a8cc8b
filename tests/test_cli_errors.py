"""The error contract: one line on stderr, exit code 2 for bad input, no traceback unless --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeplan.cli.main import main


def _run(args, capsys):
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize(
    "args_fn,needle",
    [
        (lambda d, t: ["measure", str(t / "missing.pt")], "not found"),
        (lambda d, t: ["measure", str(d / "pickled.pt")], "--trust-model"),
        (lambda d, t: ["measure", str(d / "plain_script.pt")], "--input-shape"),
        (lambda d, t: ["measure", str(d / "model.onnx"), "--input-shape", "1x3xbad"], "input-shape"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(model_files, tmp_path, capsys, args_fn, needle):
    code, out, err = _run(args_fn(model_files, tmp_path), capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err


def test_corrupt_and_truncated_files(model_files, tmp_path, capsys):
    corrupt = tmp_path / "c.onnx"
    corrupt.write_bytes((model_files / "model.onnx").read_bytes()[:200])
    trunc = tmp_path / "t.pt"
    trunc.write_bytes((model_files / "pickled.pt").read_bytes()[:400])
    unknown = tmp_path / "u.bin"
    unknown.write_bytes(b"\x00\x01garbage")
    for f, needle in ((corrupt, "corrupt"), (trunc, "corrupt"), (unknown, "unknown model format")):
        code, _, err = _run(["measure", str(f), "--trust-model"], capsys)
        assert code == 2, err
        assert needle in err
        assert err.strip().startswith("edgeplan: error:") and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgeplan.cli.main", "--debug", "measure", str(tmp_path / "x.pt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "not found" in proc.stderr


def test_help_lists_commands_with_examples(capsys):
    code = main(["--help"])
    out = capsys.readouterr().out
    assert code == 0 and "measure" in out and "Examples" in out


def test_usage_errors_exit_2_without_click_installed(monkeypatch, capsys):
    """Typer >= 0.2x vendors click and a plain `pip install edgeplan` has no click: usage errors must
    still exit 2 with click-style usage text, not crash importing click."""
    import sys

    from edgeplan.cli.main import main

    monkeypatch.setitem(sys.modules, "click", None)  # `import click` now raises ImportError
    assert main(["predict", "model.onnx", "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
    assert main(["prune", "model.onnx", "--no-such-option"]) == 2
