"""Structured channel pruning with torch-pruning 1.6.1: ``prune_module`` and ``prune_model``.

``prune_module(module, example_inputs, config)`` removes whole output channels of ``nn.Conv*`` and
``nn.Linear`` layers (and the matching input channels downstream, BatchNorm/LayerNorm entries,
concatenation slices...) with torch-pruning's dependency graph, so the result is a smaller dense
model that runs faster everywhere, not a sparse one. ``prune_model(spec, out_dir, config)`` does the
same for any model format edgeplan accepts and writes ``pruned.onnx``, ``pruned.pt`` (TorchScript)
and ``prune_report.json``.

Design decisions (and the measurements behind them):

- **Never crash on a hard group.** torch-pruning mis-handles some structures: DenseNet-style
  concat+BatchNorm when BatchNorm is not an ``nn.BatchNorm2d`` ("running_mean should contain 36
  elements not 72"), and attention blocks whose ``reshape`` into heads hard-codes the head width
  (shared/TOOLCHAIN.md). We prune *interactively* (``pruner.step(interactive=True)``): the pruned model
  runs a forward pass on the example inputs and its output shapes are compared with the original's.
  The first run checks once at the end (one forward pass, cheap on big models); if that fails, the
  next runs check after every group. A group that breaks the model (exception or wrong shapes) is
  recorded in ``PruneResult.skipped`` and pruning starts again from the unpruned copy with that group's
  layers ignored: a bad group costs one extra run, never an exception (at most ``_MAX_ATTEMPTS``).
- **Known hard cases are skipped up front with a reason**: the layers whose output is the model's
  output (classifier / final conv: found by walking the autograd graph back from the outputs to the
  first Conv/Linear, so residual paths into the output are found too) and the Linear projections of
  attention blocks (modules with a ``num_heads``-like attribute): torch-pruning needs the head layout
  to prune q/k/v consistently, and hand-written blocks reshape with fixed head widths.
- **TorchScript, .pt2 and ONNX models are pruned through ONNX** (``onnx_to_torch.onnx_to_module``,
  checked against ONNX Runtime), so no user pickle is ever executed.
- **Counting**: MACs and parameters are torch-pruning's ``tp.utils.count_ops_and_params`` at the
  model's input shape (batch as given, usually 1). These are counts, not a latency prediction:
  ``prune_model(measure_latency=True)`` measures both ONNX files side by side in ONNX Runtime.
- **Accuracy**: a pruned model needs fine-tuning. Measured (TOOLCHAIN.md): a digits CNN fell to 10 %
  accuracy right after pruning at 0.5 and recovered to 99.8 % after 5 epochs; use ``edgeplan distill``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgeplan.compressor.prune_config import MAX_RATIO, Override, PruneConfig, SearchParam, resolve_ratio
from edgeplan.hardware_profiles.errors import CompressionError, ConfigError, DataError

__all__ = [
    "MAX_RATIO",
    "Override",
    "PruneConfig",
    "SearchParam",
    "resolve_ratio",
    "LayerChannels",
    "SkippedGroup",
    "PruneResult",
    "PruneReport",
    "PruneOutcome",
    "LatencyComparison",
    "prune_module",
    "prune_model",
    "COUNTED_WITH",
]

COUNTED_WITH = "torch-pruning 1.6.1 tp.utils.count_ops_and_params (multiply-accumulates and parameters, model input shape)"
_MAX_ATTEMPTS = 24  # each failed group costs one attempt (a fresh copy and a new dependency graph)
_HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads", "nhead", "n_head", "heads")
SkipKind = Literal["output", "attention", "user", "override", "failed", "round_to"]


# ---------------------------------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class LayerChannels:
    """Channel counts of one prunable layer (Conv: channels; Linear: features)."""

    name: str
    op_type: str
    out_before: int
    out_after: int
    in_before: int
    in_after: int
    target_ratio: float  # what the config asked for this layer
    ratio_source: str  # "global", "op_type:Conv2d", "pattern:...", "name:...", "ignored", "skipped:<kind>"


@dataclass(frozen=True)
class SkippedGroup:
    """Layers whose output channels were not pruned, and why."""

    layers: tuple[str, ...]
    kind: SkipKind
    reason: str


@dataclass(frozen=True)
class PruneResult:
    module: Any  # the pruned nn.Module (a deep copy; the input module is untouched)
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: tuple[LayerChannels, ...]
    skipped: tuple[SkippedGroup, ...]
    attempts: int  # pruning runs: 1, +1 to locate a failure, +1 per group that broke the model
    taylor_target: str | None  # what Taylor importance back-propagated against, None for magnitude

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0


# ---------------------------------------------------------------------------------------------------
# Model inspection helpers


def _clamp_round_to(ratios: dict[str, tuple[float, str]], prunable: dict[str, Any], auto: dict[str, str],
                    config: Any, skipped: list) -> None:
    """Keep ``round_to`` from pruning a layer to nothing.

    torch-pruning rounds the channels a layer *keeps* down to a multiple of ``round_to``; when
    ``C x (1 - ratio) < round_to`` that is 0, and torch-pruning then skips the layer silently (measured:
    digits-cnn, 16/32/64 channels, ratio 0.78 with round_to 16 pruned nothing, while 0.7 pruned). So such a
    layer keeps ``round_to`` channels instead (its ratio becomes ``1 - round_to / C``), and a layer with at
    most ``round_to`` channels is left unpruned and reported. Global pruning ranks across layers and is
    left alone.
    """
    k = int(config.round_to or 1)
    if k <= 1 or config.global_pruning:
        return
    too_small: list[str] = []
    for n, (r, src) in list(ratios.items()):
        if n in auto or src == "ignored" or r <= 0:
            continue
        c = _channels(prunable[n])[0]
        if c * (1.0 - r) >= k:
            continue
        if c > k:
            ratios[n] = (1.0 - k / c, f"{src}, clamped to keep round_to={k} channels")
        else:
            ratios[n] = (0.0, src)
            too_small.append(n)
    if too_small:
        skipped.append(SkippedGroup(tuple(too_small), "round_to",
                                    f"{k} or fewer output channels: round_to={k} leaves nothing to prune"))


def _prunable_types():
    from torch import nn

    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def _prunable(model: Any) -> dict[str, Any]:
    types = _prunable_types()
    return {n: m for n, m in model.named_modules() if n and isinstance(m, types)}


def _channels(m: Any) -> tuple[int, int]:
    """(out, in) channels of a Conv/Linear."""
    if hasattr(m, "out_channels"):
        return int(m.out_channels), int(m.in_channels)
    return int(m.out_features), int(m.in_features)


def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (list, tuple)) and example_inputs and all(isinstance(x, torch.Tensor) for x in example_inputs):
        return tuple(example_inputs)
    raise ConfigError("example_inputs must be a tensor or a non-empty sequence of tensors")


def _flat(out: Any) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat(o)]
    if hasattr(out, "to_tuple"):
        return _flat(out.to_tuple())
    return []


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def _forward_problem(model: Any, ex: tuple, ref_shapes: list[tuple[int, ...]]) -> str | None:
    """None when the model runs and returns the original output shapes with finite values."""
    import torch

    try:
        with torch.no_grad():
            outs = _flat(model(*ex))
    except Exception as e:  # noqa: BLE001 - any failure means this group broke the model
        return _short(e)
    shapes = [tuple(o.shape) for o in outs]
    if shapes != ref_shapes:
        return f"output shape changed from {ref_shapes} to {shapes}"
    for o in outs:
        if o.is_floating_point() and not bool(torch.isfinite(o).all()):
            return "output has NaN/inf values"
    return None


def _output_layers(model: Any, ex: tuple, prunable: dict[str, Any]) -> list[str]:
    """Names of the Conv/Linear layers whose outputs reach a model output without passing another one.

    Found from the autograd graph: forward hooks map each layer's output ``grad_fn`` to its name, and a
    walk back from the outputs stops at those nodes. A classifier ``fc`` is found this way, and so is
    every layer on a residual path into the output (all of them fix the output width). Falls back to the
    last layer executed when the graph cannot be walked (e.g. no parameter requires grad).
    """
    import torch

    node2name: dict[Any, str] = {}
    order: list[str] = []

    def hook(name):
        def _h(_m, _inp, out):
            order.append(name)
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                node2name[out.grad_fn] = name

        return _h

    handles = [m.register_forward_hook(hook(n)) for n, m in prunable.items()]
    try:
        with torch.enable_grad():
            outs = _flat(model(*ex))
        found: list[str] = []
        seen: set[int] = set()
        stack = [o.grad_fn for o in outs if o.grad_fn is not None]
        while stack:
            node = stack.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if node in node2name:
                if node2name[node] not in found:
                    found.append(node2name[node])
                continue
            stack.extend(nxt for nxt, _ in getattr(node, "next_functions", ()))
    finally:
        for h in handles:
            h.remove()
    if not found and order:
        found = [order[-1]]
    return found


def _attention_layers(model: Any, prunable: dict[str, Any]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Linear projections of attention blocks: the *direct* ``nn.Linear`` children of a module that has
    an int ``num_heads``-like attribute (timm ``Attention``: qkv/proj; HF ``BertSelfAttention``:
    query/key/value; our ``archs.transformer_encoder``: q/k/v/out). Direct children only, so that an
    MLP beside the attention in a block that also carries ``num_heads`` is still pruned.

    Returns block name -> (layer names, reason). ``nn.MultiheadAttention`` is left to torch-pruning,
    which has a pruner for it (and the forward check catches it if that fails).
    """
    from torch import nn

    found: dict[str, tuple[tuple[str, ...], str]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            continue
        heads = next((getattr(m, a) for a in _HEAD_ATTRS if isinstance(getattr(m, a, None), int)), None)
        if heads is None or heads < 1:
            continue
        prefix = f"{name}." if name else ""
        layers = tuple(prefix + c for c, sub in m.named_children() if isinstance(sub, nn.Linear) and prefix + c in prunable)
        if layers:
            found[name] = (layers, f"projections of attention block {name or '(root)'!r} ({heads} heads): the reshape "
                                   "into heads fixes their width, and torch-pruning would need the head layout to prune "
                                   "q/k/v together")
    return found


def _reshaped_linears(model: Any, prunable: dict[str, Any]) -> tuple[str, ...]:
    """In a module rebuilt from ONNX: Linear layers whose output (directly or after a bias ``Add``)
    is ``Reshape``d. In exported transformers these are the q/k/v projections, reshaped into heads with
    a fixed head width, so pruning them always breaks the model; skipping them up front saves one
    failed attempt per attention block (measured: ~20 s each on a 400 M-MAC encoder here)."""
    from torch import fx, nn

    if not isinstance(model, fx.GraphModule):
        return ()
    try:
        from edgeplan.compressor._vendor.onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
        from edgeplan.compressor._vendor.onnx2torch.node_converters.reshape import OnnxReshape
    except ImportError:  # pragma: no cover
        return ()

    def is_a(node, cls):
        return node.op == "call_module" and isinstance(model.get_submodule(node.target), cls)

    found = []
    for node in model.graph.nodes:
        if node.op != "call_module" or node.target not in prunable or not isinstance(prunable[node.target], nn.Linear):
            continue
        frontier = list(node.users)
        frontier += [u2 for u in node.users if is_a(u, OnnxBinaryMathOperation) for u2 in u.users]
        if any(is_a(u, OnnxReshape) and u.args and u.args[0] in (node, *node.users) for u in frontier):
            found.append(node.target)
    return tuple(found)


def _count(model: Any, ex: tuple) -> tuple[int, int]:
    import torch
    import torch_pruning as tp

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        macs, params = tp.utils.count_ops_and_params(model, ex)
    return int(macs), int(params)


# ---------------------------------------------------------------------------------------------------
# Taylor importance: gradients from data


def _taylor_batches(data: Any, ex: tuple, n: int) -> tuple[Any, Any]:
    """(inputs tensor, labels-or-targets tensor or None) from a Dataset or an (inputs, targets) pair."""
    import torch

    if len(ex) != 1:
        raise ConfigError("Taylor importance supports single-input models only; use --importance magnitude")
    if hasattr(data, "inputs"):
        x, y = data.inputs, getattr(data, "labels", None)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)[:n]
    if x.ndim != ex[0].ndim or tuple(x.shape[1:]) != tuple(ex[0].shape[1:]):
        raise DataError(f"data inputs have shape {tuple(x.shape)}, the model expects N x {tuple(ex[0].shape[1:])}")
    x = x.to(ex[0].dtype)
    if y is not None:
        y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)[: x.shape[0]]
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{x.shape[0]} inputs but {y.shape[0]} labels/targets")
    return x, y


def _taylor_backward(model: Any, x: Any, y: Any, chunk: int = 16) -> str:
    """Accumulate dL/dw over the data; returns what the loss compared the outputs with."""
    import torch
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    target_kind = None
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        with torch.enable_grad():
            outs = _flat(model(xb))
            if not outs:
                raise CompressionError("the model returns no tensor; Taylor importance cannot back-propagate")
            out = outs[0]
            yb = None if y is None else y[i : i + chunk]
            if yb is not None and not yb.is_floating_point() and yb.ndim == 1 and out.ndim == 2:
                loss, target_kind = F.cross_entropy(out, yb.long()), "labels"
            elif yb is not None and yb.is_floating_point() and tuple(yb.shape) == tuple(out.shape):
                loss, target_kind = F.mse_loss(out, yb.to(out.dtype)), "teacher outputs"
            elif yb is None and out.ndim == 2 and out.shape[1] > 1:
                loss = F.cross_entropy(out, out.detach().argmax(1))
                target_kind = "pseudo-labels (the model's own top-1 predictions)"
            elif yb is None:
                raise DataError(
                    f"Taylor importance needs labels or teacher outputs for a model whose output is {tuple(out.shape)} "
                    "(not N x classes); add them to the data or use --importance magnitude"
                )
            else:
                raise DataError(
                    f"labels/targets of shape {tuple(yb.shape)} fit neither class labels (N,) for output "
                    f"{tuple(out.shape)} nor teacher outputs of the same shape"
                )
            (loss * xb.shape[0] / x.shape[0]).backward()
    return target_kind or "labels"


# ---------------------------------------------------------------------------------------------------
# prune_module


def prune_module(
    module: Any,
    example_inputs: Any,
    config: PruneConfig,
    *,
    data: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> PruneResult:
    """Prune a deep copy of an eager ``nn.Module``; see the module docstring for the strategy.

    ``data`` (only for ``importance="taylor"``): a ``compressor.data.Dataset`` or ``(inputs, targets)``
    where targets are integer labels (cross-entropy) or teacher outputs of the model's output shape
    (MSE); inputs alone use the model's own top-1 predictions as pseudo-labels (classifiers only).
    ``progress(done, total)`` is called after each pruned group (total: an upper bound).
    """
    import torch
    import torch_pruning as tp

    if isinstance(module, torch.jit.ScriptModule):
        raise CompressionError("a TorchScript module cannot be pruned in place; use prune_model, which converts it through ONNX")
    if not isinstance(module, torch.nn.Module):
        raise CompressionError(f"cannot prune a {type(module).__name__}; an nn.Module is needed")
    ex = _as_tuple(example_inputs)
    if config.importance == "taylor" and data is None:
        raise ConfigError("Taylor importance needs data to back-propagate (inputs with labels or teacher outputs): "
                          "pass --data, or use --importance magnitude")

    base = copy.deepcopy(module).eval()
    for p in base.parameters():
        p.requires_grad_(True)
    try:
        with torch.no_grad():
            ref_shapes = [tuple(o.shape) for o in _flat(base(*ex))]
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"the model does not run on the example inputs ({_short(e)})") from None

    prunable = _prunable(base)
    all_names = {n for n, _ in base.named_modules()}
    for n in config.ignored_layers:
        if n not in all_names:
            raise ConfigError(f"ignored layer {n!r} is not a module of the model (prunable layers: {_few(prunable)})")
    for ov in config.overrides:
        if ov.kind == "name" and ov.value not in all_names:
            raise ConfigError(f"override for layer {ov.value!r}: no such module (prunable layers: {_few(prunable)})")

    skipped: list[SkippedGroup] = []
    auto: dict[str, str] = {}
    out_layers = _output_layers(base, ex, prunable)
    if out_layers:
        skipped.append(SkippedGroup(tuple(out_layers), "output",
                                    "produces the model output (classifier / final layer): its width is the output's"))
        auto.update({n: "output" for n in out_layers})
    for layers, why in _attention_layers(base, prunable).values():
        layers = tuple(n for n in layers if n not in auto)
        if layers:
            skipped.append(SkippedGroup(layers, "attention", why))
            auto.update({n: "attention" for n in layers})
    reshaped = tuple(n for n in _reshaped_linears(base, prunable) if n not in auto)
    if reshaped:
        skipped.append(SkippedGroup(reshaped, "attention",
                                    "output is reshaped with a width fixed in the ONNX graph (attention heads): "
                                    "pruning it would break the reshape"))
        auto.update({n: "attention" for n in reshaped})
    ratios = {n: resolve_ratio(n, type(m).__name__, config) for n, m in prunable.items()}
    for n, (r, src) in ratios.items():
        if n in auto:
            continue
        if src == "ignored":
            skipped.append(SkippedGroup((n,), "user", "ignored as requested"))
        elif r <= 0:
            skipped.append(SkippedGroup((n,), "override", f"ratio 0 from override {src}"))

    _clamp_round_to(ratios, prunable, auto, config, skipped)

    macs_before, params_before = _count(base, ex)
    taylor_xy = _taylor_batches(data, ex, config.taylor_samples) if config.importance == "taylor" else None
    taylor_target = None

    forced: set[str] = set()
    # First attempt: prune every group, then run one forward check (cheap for big models). Only if that
    # fails, re-run with a forward check after each group to find the group that breaks the model.
    checked = False
    attempt = 0
    model = base
    while True:
        attempt += 1
        if attempt > _MAX_ATTEMPTS:
            raise CompressionError(f"gave up after {_MAX_ATTEMPTS} attempts: every pruning run broke the model "
                                   f"(last: {skipped[-1].reason if skipped else 'unknown'})")
        model = copy.deepcopy(base)
        mods = dict(model.named_modules())
        ignore = set(auto) | forced | {n for n, (r, _) in ratios.items() if r <= 0}
        active = [n for n in prunable if n not in ignore]
        if not active or (config.ratio <= 0 and all(ratios[n][1] == "global" for n in active)):
            break  # nothing to prune
        ratio_dict = {mods[n]: ratios[n][0] for n in active if ratios[n][1] != "global"}
        if taylor_xy is not None:
            taylor_target = _taylor_backward(model, *taylor_xy)
            importance = tp.importance.GroupTaylorImportance()
        else:
            importance = tp.importance.GroupMagnitudeImportance(p=2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                pruner = tp.pruner.MetaPruner(
                    model,
                    ex if len(ex) > 1 else ex[0],
                    importance=importance,
                    global_pruning=config.global_pruning,
                    pruning_ratio=config.ratio,
                    pruning_ratio_dict=ratio_dict or None,
                    ignored_layers=[mods[n] for n in sorted(ignore)],
                    round_to=config.round_to,
                )
        except Exception as e:  # noqa: BLE001 - torch-pruning raises assorted errors while tracing
            raise CompressionError(f"torch-pruning cannot trace the model ({_short(e)})") from None
        mod2name = {m: n for n, m in mods.items()}
        failed: tuple[tuple[str, ...], str] | None = None
        done = 0
        groups = pruner.step(interactive=True)
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    group = next(groups)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001
                raise CompressionError(f"torch-pruning failed while ranking channels ({_short(e)})") from None
            members = _out_members(group, pruner, mod2name)
            try:
                group.prune()
                problem = _forward_problem(model, ex, ref_shapes) if checked else None
            except Exception as e:  # noqa: BLE001 - a group torch-pruning cannot handle
                problem = _short(e)
            if problem is not None:
                failed = (members, problem)
                break
            done += 1
            if progress is not None:
                progress(done, len(active))
        if failed is None:
            problem = _forward_problem(model, ex, ref_shapes)
            if problem is None:
                break
            if checked:  # every group passed its own check, yet the whole fails: cannot attribute it
                raise CompressionError(f"the pruned model fails its final check ({problem})")
            checked = True  # locate the group: run again with a forward check after each group
            continue
        members, problem = failed
        if not members or set(members) <= forced:
            raise CompressionError(f"pruning breaks the model and the failing layers cannot be identified ({problem})")
        skipped.append(SkippedGroup(members, "failed", f"pruning this group breaks the model ({problem}); left unpruned"))
        forced |= set(members)

    model.zero_grad(set_to_none=True)  # parameters stay trainable: the next step is fine-tuning/distillation
    model.eval()
    macs_after, params_after = _count(model, ex)
    after = _prunable(model)
    kept = {**{n: f"skipped:{k}" for n, k in auto.items()}, **{n: "skipped:failed" for n in forced}}
    layers = tuple(
        LayerChannels(n, type(m).__name__, *_pair(_channels(m), _channels(after[n]) if n in after else _channels(m)),
                      0.0 if n in kept else ratios[n][0], kept.get(n, ratios[n][1]))
        for n, m in prunable.items()
    )
    return PruneResult(model, macs_before, macs_after, params_before, params_after, layers, tuple(skipped),
                       attempt, taylor_target)


def _pair(before: tuple[int, int], after: tuple[int, int]) -> tuple[int, int, int, int]:
    return before[0], after[0], before[1], after[1]


def _few(prunable: dict[str, Any], k: int = 6) -> str:
    names = list(prunable)
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "") if names else "none"


def _out_members(group: Any, pruner: Any, mod2name: dict[Any, str]) -> tuple[str, ...]:
    """Names of the Conv/Linear layers whose output channels this group prunes."""
    types = _prunable_types()
    names: list[str] = []
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, types) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
            n = mod2name.get(m)
            if n and n not in names:
                names.append(n)
    return tuple(names)


# ---------------------------------------------------------------------------------------------------
# prune_model: any format in, files out


class LayerChannelsModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    op_type: str
    out_before: int
    out_after: int
    in_before: int
    in_after: int
    target_ratio: float
    ratio_source: str


class SkippedGroupModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: tuple[str, ...]
    kind: SkipKind
    reason: str


class LatencyComparison(BaseModel):
    """ONNX Runtime latency of the original and the pruned ONNX, measured side by side in one process."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    original_median_ms: float
    pruned_median_ms: float
    original_p90_ms: float
    pruned_p90_ms: float
    repeats: int
    threads: int
    method: str

    @property
    def speedup(self) -> float:
        return self.original_median_ms / self.pruned_median_ms if self.pruned_median_ms > 0 else float("inf")


class PruneReport(BaseModel):
    """Everything ``prune_model`` did, written as ``prune_report.json`` beside the pruned files."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: PruneConfig
    source: str
    source_format: str
    route: Literal["eager", "onnx2torch"]
    conversion_max_abs_diff: float | None  # onnx2torch module vs ONNX Runtime (onnx2torch route only)
    counted_with: str
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: tuple[LayerChannelsModel, ...]
    skipped: tuple[SkippedGroupModel, ...]
    attempts: int
    taylor_target: str | None
    pruned_onnx: str
    pruned_torchscript: str
    onnx_max_abs_diff: float  # pruned.onnx in ORT vs the pruned torch module, same inputs
    torchscript_max_abs_diff: float  # pruned.pt reloaded vs the pruned torch module
    latency: LatencyComparison | None
    latency_note: str
    notes: tuple[str, ...]


@dataclass(frozen=True)
class PruneOutcome:
    report: PruneReport
    result: PruneResult
    onnx_path: Path
    torchscript_path: Path
    report_path: Path


def _report_layers(result: PruneResult) -> tuple[LayerChannelsModel, ...]:
    return tuple(LayerChannelsModel(**l.__dict__) for l in result.layers)


def prune_model(
    spec_or_loaded: Any,
    out_dir: str | Path,
    config: PruneConfig,
    *,
    trust_model: bool = False,
    weights: str | Path | None = None,
    input_shape: Any = None,
    data: Any = None,
    measure_latency: bool = False,
    latency_repeats: int = 30,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PruneOutcome:
    """Prune a model given as a path / factory spec or a ``LoadedModel`` and write it to ``out_dir``.

    Eager modules (pickle, factory) are pruned directly. TorchScript, ``.pt2`` and ONNX models are
    exported to (or taken as) ONNX and rebuilt with ``onnx_to_module`` (checked against ORT), then
    pruned. Writes, each atomically: ``pruned.onnx`` (one self-contained file, checked against the
    pruned module in ORT), ``pruned.pt`` (TorchScript with edgeplan's input metadata: loads without
    unpickling) and ``prune_report.json`` (``PruneReport``). ``data`` may be a path (``load_data``). With ``measure_latency`` the original and
    pruned ONNX files are timed side by side (``ort_timing.time_side_by_side``).
    """
    import torch

    from edgeplan.compressor.export import export_onnx, to_onnx
    from edgeplan.compressor.intake import LoadedModel, load_model, save_torchscript
    from edgeplan.compressor.onnx_to_torch import onnx_to_module
    from edgeplan.hardware_profiles.atomic import atomic_write_text

    if config.importance == "taylor" and data is None:  # fail before loading anything
        raise ConfigError("Taylor importance needs data to back-propagate (inputs with labels or teacher outputs): "
                          "pass --data, or use --importance magnitude")
    out_dir = Path(out_dir)
    loaded = spec_or_loaded if isinstance(spec_or_loaded, LoadedModel) else load_model(
        spec_or_loaded, trust_model=trust_model, weights=weights, input_shape=input_shape)
    if isinstance(data, (str, Path)):
        from edgeplan.compressor.data import load_data

        data = load_data(data)
    names = [i.name for i in loaded.inputs]
    ex = loaded.example_inputs()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeplan-prune-") as tmp:
        original_onnx: Path | None = None
        conversion_diff = None
        if loaded.is_eager:
            route = "eager"
            module = loaded.module
        else:
            route = "onnx2torch"
            if loaded.format == "onnx":
                original_onnx = loaded.onnx_path
            else:
                original_onnx = Path(tmp) / "original.onnx"
                rep = to_onnx(loaded, original_onnx)
                if not rep.matched:
                    raise CompressionError(f"cannot prune through ONNX: the export does not match the model ({rep.describe()})")
            feeds = {n: x.numpy() for n, x in zip(names, ex)}
            module = onnx_to_module(original_onnx, check_inputs=[feeds])
            conversion_diff = float(getattr(module, "edgeplan_conversion_max_abs_diff", 0.0))
            notes.append(f"pruned through ONNX -> torch (onnx2torch), which matched ONNX Runtime within {conversion_diff:.1e}")

        result = prune_module(module, ex, config, data=data, progress=progress)

        onnx_path = out_dir / "pruned.onnx"
        pt_path = out_dir / "pruned.pt"
        out_dir.mkdir(parents=True, exist_ok=True)
        exp = export_onnx(result.module, ex, onnx_path, input_names=names)
        if not exp.matched:
            onnx_path.unlink(missing_ok=True)
            raise CompressionError(f"the pruned model's ONNX export does not match it ({exp.describe()})")
        save_torchscript(result.module, pt_path, loaded.inputs)
        ts = torch.jit.load(str(pt_path), map_location="cpu")
        with torch.no_grad():
            ref = [o.numpy() for o in _flat(result.module(*ex))]
            got = [o.numpy() for o in _flat(ts(*ex))]
        ts_diff = max((float(np.max(np.abs(a - b))) for a, b in zip(ref, got) if a.size), default=0.0)
        if len(ref) != len(got) or ts_diff > 1e-4 + 1e-3 * max((float(np.max(np.abs(a))) for a in ref if a.size), default=0.0):
            raise CompressionError(f"the saved TorchScript pruned.pt does not reproduce the pruned model (max diff {ts_diff:.3g})")

        latency = None
        if not measure_latency:
            latency_note = "latency not measured (pass measure_latency / --latency)"
        else:
            latency, latency_note = _measure(loaded, original_onnx, onnx_path, ex, names, Path(tmp),
                                             latency_repeats, threads)
            if latency is not None and latency.pruned_median_ms >= latency.original_median_ms:
                notes.append(f"the pruned model is NOT faster here: {latency.pruned_median_ms:.3f} ms vs "
                             f"{latency.original_median_ms:.3f} ms (median, same run)")
    if result.skipped and any(s.kind == "failed" for s in result.skipped):
        notes.append("some groups broke the model when pruned and were left unpruned (see skipped)")
    notes.append("accuracy drops right after pruning; fine-tune or distill (edgeplan distill) before deploying")

    report = PruneReport(
        config=config,
        source=loaded.source,
        source_format=loaded.format,
        route=route,
        conversion_max_abs_diff=conversion_diff,
        counted_with=COUNTED_WITH,
        macs_before=result.macs_before,
        macs_after=result.macs_after,
        params_before=result.params_before,
        params_after=result.params_after,
        layers=_report_layers(result),
        skipped=tuple(SkippedGroupModel(layers=s.layers, kind=s.kind, reason=s.reason) for s in result.skipped),
        attempts=result.attempts,
        taylor_target=result.taylor_target,
        pruned_onnx=onnx_path.name,
        pruned_torchscript=pt_path.name,
        onnx_max_abs_diff=float(exp.max_abs_diff or 0.0),
        torchscript_max_abs_diff=ts_diff,
        latency=latency,
        latency_note=latency_note,
        notes=tuple(notes),
    )
    report_path = atomic_write_text(out_dir / "prune_report.json", report.model_dump_json(indent=2) + "\n")
    return PruneOutcome(report, result, onnx_path, pt_path, report_path)


def _measure(loaded: Any, original_onnx: Path | None, pruned_onnx: Path, ex: tuple, names: Sequence[str],
             tmp: Path, repeats: int, threads: int | None) -> tuple[LatencyComparison | None, str]:
    """Time original and pruned ONNX side by side; (None, why) when it cannot be done."""
    try:
        from edgeplan.compressor.ort_timing import default_threads, time_side_by_side
    except ImportError:
        return None, "latency not measured: the ONNX Runtime timing helper is not available"
    from edgeplan.compressor.export import export_onnx

    if original_onnx is None:
        original_onnx = tmp / "original.onnx"
        rep = export_onnx(loaded.module, ex, original_onnx, input_names=list(names))
        if not rep.matched:
            return None, f"latency not measured: the original model's ONNX export does not match it ({rep.describe()})"
    feeds = {n: x.numpy() for n, x in zip(names, ex)}
    try:
        orig, pruned = time_side_by_side([original_onnx, pruned_onnx], feeds, repeats=repeats, warmup=3, threads=threads)
    except Exception as e:  # noqa: BLE001 - a timing failure must not lose the pruned model
        return None, f"latency not measured: {_short(e)}"
    n_threads = threads or default_threads()
    method = (f"ONNX Runtime CPU, {n_threads} intra-op threads, median of {repeats} runs per model after 3 warm-up "
              "runs, original and pruned interleaved in one process on this machine")
    return LatencyComparison(original_median_ms=orig.median_ms, pruned_median_ms=pruned.median_ms,
                             original_p90_ms=orig.p90_ms, pruned_p90_ms=pruned.p90_ms, repeats=repeats,
                             threads=n_threads, method=method), method
