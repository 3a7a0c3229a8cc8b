"""Example architectures written in plain ``torch.nn`` (no torchvision, no timm).

Why they live here: torchvision is a CUDA build on this machine and cannot be imported with CPU torch
(see /work/shared/TOOLCHAIN.md), and the tool needs well-known topologies to demonstrate pruning,
quantization and split planning offline. Each factory is importable as a ``pkg.module:function`` spec
(for example ``edgeplan.compressor.archs:resnet18_like``) and returns an ``nn.Module`` that is

- in eval mode,
- deterministic: weights come from ``torch.manual_seed(seed)`` (default 0) inside a forked RNG, so
  calling a factory never disturbs the caller's global RNG state,
- tagged with ``example_input_shape`` (batch 1 included) and ``example_input_dtype`` attributes; the
  same facts are in the module-level ``*_INPUT`` constants and in the ``EXAMPLES`` registry.

BatchNorm statistics of the untrained image models (resnet18, mobilenetv2, dcgan) are estimated from
one batch of standard-normal inputs (``_calibrate_batchnorm``). Without this, BatchNorm in eval mode is
the identity and activation scale drifts with depth: measured, an uncalibrated MobileNetV2 gives logits
with std 1e-9 (resnet18 0.6), which makes absolute tolerances (torch vs ONNX Runtime) and quantization
scales meaningless. With it the logits have std 0.2-0.3 (resnet18, mobilenetv2, dcgan image). The MAC/parameter counts are those
of the reference topologies (torchvision's parameter counts; checked in tests/test_examples.py).
Parameters are ``sum(p.numel() for p in model.parameters())``; MACs are torch-pruning 1.6.1
``tp.utils.count_ops_and_params`` at batch 1 (its parameter count differs slightly: it also counts
some BatchNorm buffers).

    resnet18_like        11,689,512 params  1822.2 M MACs
    mobilenetv2_like      3,504,872 params   320.3 M MACs (torchvision quotes 0.30 G; counters differ)
    transformer_encoder   3,450,890 params   403.8 M MACs (Linear only; +33.6 M in attention matmuls)
    dcgan_generator       3,576,704 params   428.7 M MACs
    digits_resnet         2,776,522 params   105.4 M MACs
    digits_cnn               40,506 params     0.6 M MACs
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = [
    "ExampleSpec",
    "EXAMPLES",
    "resnet18_like",
    "mobilenetv2_like",
    "transformer_encoder",
    "dcgan_generator",
    "digits_cnn",
    "digits_resnet",
    "example_input",
    "RESNET18_INPUT",
    "MOBILENETV2_INPUT",
    "TRANSFORMER_INPUT",
    "DCGAN_INPUT",
    "DIGITS_CNN_INPUT",
    "DIGITS_RESNET_INPUT",
]

# (input shape with batch 1, dtype) per architecture at its default arguments.
RESNET18_INPUT: tuple[tuple[int, ...], str] = ((1, 3, 224, 224), "float32")
MOBILENETV2_INPUT: tuple[tuple[int, ...], str] = ((1, 3, 224, 224), "float32")
TRANSFORMER_INPUT: tuple[tuple[int, ...], str] = ((1, 128), "int64")
DCGAN_INPUT: tuple[tuple[int, ...], str] = ((1, 100, 1, 1), "float32")
DIGITS_CNN_INPUT: tuple[tuple[int, ...], str] = ((1, 1, 8, 8), "float32")
DIGITS_RESNET_INPUT: tuple[tuple[int, ...], str] = ((1, 1, 32, 32), "float32")


def _finish(model: nn.Module, shape: tuple[int, ...], dtype: str) -> nn.Module:
    model.example_input_shape = tuple(shape)  # type: ignore[assignment]
    model.example_input_dtype = dtype  # type: ignore[assignment]
    return model.eval()


@torch.no_grad()
def _calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BatchNorm's running stats to the statistics of one forward pass on ``x``.

    ``momentum=None`` makes BatchNorm keep a cumulative average; after one batch that *is* the batch
    statistic. Momentum is restored afterwards so a later fine-tune behaves like a normal model.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


def _kaiming_init(model: nn.Module) -> None:
    """torchvision's ResNet/MobileNet init: kaiming-normal (fan_out) convs, BN 1/0, small linear."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, plus identity or 1x1-conv-BN shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A BasicBlock ResNet; ``stem`` chooses the ImageNet stem (7x7/2 conv + maxpool) or a 3x3 one."""

    def __init__(
        self,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        num_classes: int,
        in_ch: int = 3,
        imagenet_stem: bool = True,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        w0 = widths[0]
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_ch, w0, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_ch, w0, 3, stem_stride, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        layers = []
        prev = w0
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(prev, w, stride)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            prev = w
        self.layers = nn.ModuleList(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.layers:
            x = layer(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18_like(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """ResNet-18 (BasicBlocks [2, 2, 2, 2], widths 64-512) at 1x3x224x224, random init.

    Same topology and parameter count as torchvision's resnet18 (11,689,512 at 1000 classes,
    1.82 GMACs); BatchNorm statistics estimated on normal(0, 1) inputs (module docstring).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes)
        _kaiming_init(model)
        _calibrate_batchnorm(model, torch.randn(4, 3, 112, 112))
    return _finish(model, *RESNET18_INPUT)


# ---------------------------------------------------------------------------------------- MobileNetV2


class ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, k, stride, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (skipped when t=1), 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.use_res = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers.append(ConvBNAct(hidden, hidden, 3, stride, groups=hidden))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=False))
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion t, output channels c, repeats n, first stride s), width multiplier 1.0.
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, 2)]
        prev = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(prev, c, s if i == 0 else 1, t))
                prev = c
        layers.append(ConvBNAct(prev, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def mobilenetv2_like(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """MobileNetV2 (width 1.0) at 1x3x224x224: inverted residuals, depthwise 3x3, ReLU6, random init.

    Same topology and parameter count as torchvision's mobilenet_v2 (3,504,872 at 1000 classes,
    0.30-0.32 GMACs depending on the counter); BatchNorm statistics estimated on normal(0, 1) inputs (module docstring).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MobileNetV2(num_classes)
        _kaiming_init(model)
        _calibrate_batchnorm(model, torch.randn(4, 3, 112, 112))
    return _finish(model, *MOBILENETV2_INPUT)


# ---------------------------------------------------------------------------------------- Transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (Linear q/k/v, reshape/transpose, MatMul, Softmax).

    Deliberately not ``nn.MultiheadAttention``: its ONNX export is a fused/opaque pattern, while this
    exports to plain MatMul/Softmax/Transpose nodes that graph analysis and splitting can see.
    """

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} is not divisible by heads={heads}")
        self.heads = heads
        self.head_dim = d_model // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # b h t dh
        k = self.k(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


class EncoderBlock(nn.Module):
    """Pre-norm encoder block: x + attn(LN(x)); x + MLP(LN(x)) with a GELU MLP of width 4 * d_model."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class TransformerEncoder(nn.Module):
    def __init__(self, vocab_size: int, seq_len: int, d_model: int, heads: int, layers: int, num_classes: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, seq_len, d_model))
        nn.init.normal_(self.pos, 0, 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d_model, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos
        x = self.ln(self.blocks(x))
        return self.head(x.mean(dim=1))


def transformer_encoder(
    vocab_size: int = 1000,
    seq_len: int = 128,
    d_model: int = 256,
    heads: int = 4,
    layers: int = 4,
    num_classes: int = 10,
    seed: int = 0,
) -> nn.Module:
    """Token-ids [1, seq_len] (int64) -> embedding + learned positions -> encoder blocks -> mean pool -> classes.

    Attention is written by hand so the ONNX export is plain MatMul/Softmax. At the defaults:
    3.45M parameters; Linear layers 0.404 GMACs (what torch-pruning's ``count_ops_and_params``
    reports) plus 0.034 GMACs in the two attention matmuls per layer, which that counter omits.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TransformerEncoder(vocab_size, seq_len, d_model, heads, layers, num_classes)
    return _finish(model, (1, seq_len), "int64")


# -------------------------------------------------------------------------------------------- DCGAN


class DCGANGenerator(nn.Module):
    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3) -> None:
        super().__init__()

        def up(i: int, o: int, first: bool = False) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(i, o, 4, 1, 0, bias=False) if first else nn.ConvTranspose2d(i, o, 4, 2, 1, bias=False)
            return [conv, nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *up(nz, ngf * 8, first=True),  # 4x4
            *up(ngf * 8, ngf * 4),  # 8x8
            *up(ngf * 4, ngf * 2),  # 16x16
            *up(ngf * 2, ngf),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def dcgan_generator(nz: int = 100, ngf: int = 64, seed: int = 0) -> nn.Module:
    """DCGAN generator: noise 1 x nz x 1 x 1 -> ConvTranspose2d/BN/ReLU x4 -> ConvTranspose2d + Tanh -> 1x3x64x64.

    Activation tensors grow toward the output (4x4x512 -> 64x64x3 images), the opposite of a
    classifier: a useful case for split planning. DCGAN paper init (normal(0, 0.02) weights,
    BN gamma normal(1, 0.02)); BatchNorm statistics estimated on normal(0, 1) noise.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DCGANGenerator(nz, ngf)
        for m in model.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
        _calibrate_batchnorm(model, torch.randn(16, nz, 1, 1))
    return _finish(model, (1, nz, 1, 1), "float32")


# ------------------------------------------------------------------------------------------- digits


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # 2x2
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 2 * 2, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_cnn(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """Small CNN for 1x1x8x8 digit images (sklearn load_digits scaled to [0, 1]); 41K params, 0.6M MACs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN(num_classes)
    return _finish(model, *DIGITS_CNN_INPUT)


def digits_resnet(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """Residual CNN for digits upsampled to 1x1x32x32: 3x3 stride-2 stem, BasicBlock stages 64-128-256.

    Sized so that its ONNX Runtime latency is clearly measurable (milliseconds, not microseconds) while
    training on the 1,437 load_digits training images still fits in about a minute on 2 cores; see
    ``compressor.examples`` for the measured numbers.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet((64, 128, 256), (2, 2, 2), num_classes, in_ch=1, imagenet_stem=False, stem_stride=2)
        _kaiming_init(model)
    return _finish(model, *DIGITS_RESNET_INPUT)


# ----------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ExampleSpec:
    """One example model: how to build it and what it eats.

    ``factory`` builds the module with default arguments; ``factory_spec`` is the same factory as a
    ``pkg.module:function`` string that ``compressor.intake`` can load. ``trained`` says whether
    ``compressor.examples.make_example`` trains it (on sklearn's digits) or writes random weights.
    """

    name: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    input_dtype: str
    trained: bool
    description: str

    @property
    def factory_spec(self) -> str:
        return f"{self.factory.__module__}:{self.factory.__name__}"


def example_input(spec: ExampleSpec, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A deterministic example input for ``spec``: normal(0, 1) floats, or token ids in [0, 1000)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, *spec.input_shape[1:])
    if spec.input_dtype == "int64":
        return torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
    return torch.randn(shape, generator=g)


EXAMPLES: dict[str, ExampleSpec] = {
    s.name: s
    for s in (
        ExampleSpec("digits-cnn", digits_cnn, DIGITS_CNN_INPUT[0], DIGITS_CNN_INPUT[1], True,
                    "small CNN trained on sklearn digits (8x8, 10 classes); trains in seconds"),
        ExampleSpec("digits-resnet", digits_resnet, DIGITS_RESNET_INPUT[0], DIGITS_RESNET_INPUT[1], True,
                    "residual CNN (64-128-256) trained on sklearn digits upsampled to 32x32; latency in milliseconds"),
        ExampleSpec("resnet18", resnet18_like, RESNET18_INPUT[0], RESNET18_INPUT[1], False,
                    "ResNet-18 topology at 224x224, random weights (11.7M params, 1.82 GMACs)"),
        ExampleSpec("mobilenetv2", mobilenetv2_like, MOBILENETV2_INPUT[0], MOBILENETV2_INPUT[1], False,
                    "MobileNetV2 (width 1.0) at 224x224, random weights (3.5M params, 0.32 GMACs)"),
        ExampleSpec("transformer", transformer_encoder, TRANSFORMER_INPUT[0], TRANSFORMER_INPUT[1], False,
                    "4-layer transformer encoder over 128 token ids, hand-written attention, random weights"),
        ExampleSpec("dcgan", dcgan_generator, DCGAN_INPUT[0], DCGAN_INPUT[1], False,
                    "DCGAN generator: 100-d noise -> 3x64x64 image (activations grow), random weights"),
    )
}
