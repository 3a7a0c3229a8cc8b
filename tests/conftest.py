"""Shared fixtures: tiny models saved in every intake format."""

from __future__ import annotations

import os

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".torchinductor"))

import pytest
import torch
from torch import nn

# One torch thread: tiny models gain nothing from two, and on a busy 2-core machine two threads wait on
# each other (measured: a file of distillation tests took 132 s with 2 threads, 22 s with 1).
torch.set_num_threads(1)


class TinyNet(nn.Module):
    """A tiny residual CNN (conv, BN, ReLU, skip, pool, linear) at 1x3x16x16."""

    example_input_shape = (1, 3, 16, 16)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """The same tiny model as pickle, state_dict, TorchScript, .pt2 and ONNX files."""
    from edgeplan.compressor.export import export_onnx
    from edgeplan.compressor.intake import InputSpec, save_torchscript

    d = tmp_path_factory.mktemp("models")
    m = tiny_net()
    x = torch.randn(1, 3, 16, 16)
    torch.save(m, d / "pickled.pt")
    torch.save(m.state_dict(), d / "weights.pt")
    torch.jit.save(torch.jit.trace(m, x), d / "plain_script.pt")
    save_torchscript(m, d / "script.pt", (InputSpec("input", (1, 3, 16, 16)),))
    torch.export.save(torch.export.export(m, (x,)), d / "prog.pt2")
    export_onnx(m, (x,), d / "model.onnx")
    return d
