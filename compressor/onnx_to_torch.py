"""ONNX -> ``torch.nn.Module``, checked against ONNX Runtime.

Why this exists: pruning needs an eager ``nn.Module`` (torch-pruning traces autograd and edits
``nn.Conv2d``/``nn.Linear`` weights in place). Models that arrive as TorchScript, a ``torch.export``
``.pt2`` or ONNX have no eager module we could edit, and unpickling a user's ``.pt`` executes code.
So every non-eager model is pruned through ONNX: export (or take) the ONNX graph, rebuild it as an
``fx.GraphModule`` of real ``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm2d`` modules with the vendored
onnx2torch 1.5.15 (see ``_vendor/README.md``), and prune that. Nothing is unpickled on the way.

The conversion is only useful if it is exact, so ``onnx_to_module`` runs the converted module and the
original graph in ONNX Runtime on the same random inputs and raises ``CompressionError`` (with the
largest absolute difference) when they disagree by more than ``atol`` (+ ``atol`` relative).
Measured (shared/TOOLCHAIN.md): seven varied architectures matched ORT within 1e-6.

Facts a later engineer needs:
- onnx2torch turns ``Conv`` into ``nn.Conv2d``, ``Gemm`` with constant weights into ``nn.Linear`` and
  ``BatchNormalization`` with constant statistics into ``nn.BatchNorm2d`` — the module types
  torch-pruning knows. Two passes here make more of a graph prunable: ``Identity`` nodes on weights
  (legacy exporter) are folded so BatchNorm statistics are seen as constants, and ``MatMul`` (+ ``Add``)
  with a constant 2-D weight becomes ``nn.Linear`` (how exporters write Linear on 3-D inputs).
  ``Reshape``/``Concat``/activation ``MatMul`` stay onnx2torch modules, opaque to torch-pruning;
  attention reshapes with fixed head widths therefore break when the channels feeding them are
  pruned (``prune_module`` detects that with a forward check and leaves those groups unpruned).
- The legacy exporter folds BatchNorm into Conv, so a converted module often has no BatchNorm at all.
- Module names in the converted module are ONNX node names (``/features/features.0/Conv`` becomes a
  sanitised attribute name); per-layer pruning overrides match those names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeplan.hardware_profiles.errors import CompressionError, ModelLoadError

__all__ = ["onnx_to_module", "random_feeds"]

# onnx2torch 1.5.15 registers converters up to about opset 17. The exporters of torch 2.13 emit opset
# 18-20, where these operators changed only by admitting new element types (float8, int4) or, for
# AveragePool-19, an optional ``dilations`` attribute: the older converter is exact for the graphs we
# see, and the check against ONNX Runtime in ``onnx_to_module`` catches any case where it is not.
_TYPE_ONLY_NEWER = {
    "AveragePool": (19,),
    "Cast": (19, 21),
    "Constant": (19, 21),
    "ConstantOfShape": (20, 21),
    "Equal": (19,),
    "Flatten": (21,),
    "GreaterOrEqual": (16,),
    "LessOrEqual": (16,),
    "Identity": (19, 21),
    "IsInf": (20,),
    "IsNaN": (20,),
    "Shape": (19, 21),
    "Transpose": (21,),
    "Unsqueeze": (21,),
}
# Opset 18 moved ``axes`` of these reductions from an attribute to an input; the dynamo exporter emits
# ``ReduceMean-18`` for ``x.mean((2, 3))``. Registered below for constant ``axes`` only.
_REDUCE_AXES_AS_INPUT = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                         "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
_registered = False
_ALLOW_ZERO_CLS = None


def _reshape_allow_zero_class():
    """``OnnxReshape`` for ``allowzero=1`` (a 0 in the shape is a zero-size dimension, not "copy").

    That is exactly ``torch.reshape``'s meaning of 0, so the module calls it directly; exported back to
    ONNX it keeps ``allowzero=1``. A subclass of ``OnnxReshape`` so code that looks for reshapes in a
    converted graph (``prune._reshaped_linears``) finds it too. Built lazily to keep torch out of imports.
    """
    global _ALLOW_ZERO_CLS
    if _ALLOW_ZERO_CLS is not None:
        return _ALLOW_ZERO_CLS
    import torch

    from edgeplan.compressor._vendor.onnx2torch.node_converters.reshape import OnnxReshape
    from edgeplan.compressor._vendor.onnx2torch.utils.custom_export_to_onnx import DefaultExportToOnnx

    class OnnxReshapeAllowZero(OnnxReshape):
        @staticmethod
        def _do_reshape(input_tensor, shape):
            return torch.reshape(input_tensor, torch.Size([int(d) for d in shape]))

        def forward(self, input_tensor, shape):
            def _forward():
                return self._do_reshape(input_tensor, shape)

            if torch.onnx.is_in_onnx_export():
                return DefaultExportToOnnx.export(_forward, "Reshape", input_tensor, shape, {"allowzero_i": 1})
            return _forward()

    _ALLOW_ZERO_CLS = OnnxReshapeAllowZero
    return _ALLOW_ZERO_CLS


def _extend_converters() -> None:
    """Register the aliases and converters above in the vendored registry (once per process)."""
    global _registered
    if _registered:
        return
    from edgeplan.compressor._vendor.onnx2torch.node_converters import registry
    from edgeplan.compressor._vendor.onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from edgeplan.compressor._vendor.onnx2torch.utils.common import (
        OnnxMapping,
        OperationConverterResult,
        get_const_value,
    )

    reg = registry._CONVERTER_REGISTRY  # noqa: SLF001 - the vendored registry has no public alias API
    for op, versions in _TYPE_ONLY_NEWER.items():
        older = [k for k in reg if k.domain == "" and k.operation_type == op]
        if not older:
            continue
        base = reg[max(older, key=lambda k: k.version)]
        for v in versions:
            key = registry.OperationDescription(domain="", operation_type=op, version=v)
            reg.setdefault(key, base)

    def _reduce18(node, graph):
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            try:
                axes = [int(a) for a in get_const_value(node.input_values[1], graph).reshape(-1).tolist()]
            except Exception as e:  # noqa: BLE001
                raise NotImplementedError(f"{node.operation_type}-18 with non-constant axes") from e
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            raise NotImplementedError(f"{node.operation_type}-18 with noop_with_empty_axes=1")
        return OperationConverterResult(
            torch_module=OnnxReduceStaticAxes(node.operation_type, axes, node.attributes.get("keepdims", 1)),
            onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values),
        )

    from edgeplan.compressor._vendor.onnx2torch.node_converters.reshape import OnnxReshape
    from edgeplan.compressor._vendor.onnx2torch.utils.common import onnx_mapping_from_node

    allow_zero_cls = _reshape_allow_zero_class()

    def _reshape(node, graph):  # upstream raises NotImplementedError for allowzero=1 (dynamo emits it)
        mod = allow_zero_cls() if node.attributes.get("allowzero", 0) == 1 else OnnxReshape()
        return OperationConverterResult(torch_module=mod, onnx_mapping=onnx_mapping_from_node(node=node))

    for v in (14, 19, 21):
        reg[registry.OperationDescription(domain="", operation_type="Reshape", version=v)] = _reshape

    for op in _REDUCE_AXES_AS_INPUT:
        for v in (18, 20):
            key = registry.OperationDescription(domain="", operation_type=op, version=v)
            reg.setdefault(key, _reduce18)
    _registered = True

def random_feeds(model: Any, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """Random inputs for an ONNX ``ModelProto`` (symbolic dims become 1 unless ``shapes`` gives them)."""
    import onnx

    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        t = vi.type.tensor_type
        if shapes and vi.name in shapes:
            shape = tuple(shapes[vi.name])
        else:
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dtype.kind in "iu":
            feeds[vi.name] = rng.integers(0, 100, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _load(onnx_path_or_model: Any):
    import onnx

    if isinstance(onnx_path_or_model, onnx.ModelProto):
        return onnx_path_or_model
    p = Path(onnx_path_or_model)
    if not p.exists():
        raise ModelLoadError(f"ONNX model not found: {p}")
    try:
        return onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - any parse failure is a load error
        raise ModelLoadError(f"{p}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None


def _fold_constant_identities(model):
    """Return a copy of ``model`` without ``Identity`` nodes whose input is an initializer.

    The legacy exporter emits ``Identity`` nodes for shared or re-used weights (BatchNorm statistics,
    tied weights). onnx2torch then cannot see that the BatchNorm's parameters are constants and builds
    its generic ``OnnxBatchNorm`` (parameters as graph buffers) instead of ``nn.BatchNorm2d`` — which
    torch-pruning cannot prune, so a DenseNet-style concat+BatchNorm block would fail to prune
    ("running_mean should contain 16 elements not 32"). Pointing consumers at the initializer itself
    restores ``nn.BatchNorm2d``. Identities that produce graph outputs are kept.
    """
    import onnx

    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        return model  # control flow: subgraphs may read the aliases; leave the graph as it is
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.domain in ("", "ai.onnx") and len(node.input) == 1:
            src = alias.get(node.input[0], node.input[0])
            if src in inits and node.output[0] not in outputs:
                alias[node.output[0]] = src
    if not alias:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in out.graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    del out.graph.node[:]
    for n in keep:
        for i, name in enumerate(n.input):
            if name in alias:
                n.input[i] = alias[name]
        out.graph.node.append(n)
    # value_info entries of removed tensors would confuse shape inference
    vi = [v for v in out.graph.value_info if v.name not in alias]
    del out.graph.value_info[:]
    out.graph.value_info.extend(vi)
    return out


def _fetch(gm: Any, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _matmul_to_linear(gm: Any) -> int:
    """Rewrite ``MatMul(x, W)`` (+ ``Add(b)``) with constant 2-D ``W`` as ``nn.Linear``; returns the count.

    Exporters write ``nn.Linear`` on 3-D inputs (every transformer) as ``MatMul`` + ``Add`` rather than
    ``Gemm``. onnx2torch keeps them as opaque ``OnnxMatMul`` modules with the weight in a buffer, which
    torch-pruning can neither prune nor count (a transformer's MACs would read as almost zero). As
    ``nn.Linear`` they are both prunable and counted. The rewritten module is checked against ONNX
    Runtime like every conversion, so this pass cannot silently change results.
    """
    import torch
    from torch import fx, nn

    from edgeplan.compressor._vendor.onnx2torch.node_converters.binary_math_operations import OnnxBinaryMathOperation
    from edgeplan.compressor._vendor.onnx2torch.node_converters.matmul import OnnxMatMul

    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 2 or node.kwargs:
            continue
        if not isinstance(gm.get_submodule(node.target), OnnxMatMul) or "." in node.target:
            continue
        a, w = node.args
        if not (isinstance(w, fx.Node) and w.op == "get_attr") or (isinstance(a, fx.Node) and a.op == "get_attr"):
            continue
        weight = _fetch(gm, w.target)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or not weight.is_floating_point():
            continue
        k, n = weight.shape
        bias, add = None, None
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and "." not in users[0].target:
            u = users[0]
            um = gm.get_submodule(u.target)
            if (isinstance(um, OnnxBinaryMathOperation) and um.math_op_function is torch.add and um.broadcast is None
                    and len(u.args) == 2 and not u.kwargs):
                other = u.args[0] if u.args[1] is node else u.args[1]
                if isinstance(other, fx.Node) and other.op == "get_attr":
                    b = _fetch(gm, other.target)
                    if isinstance(b, torch.Tensor) and b.numel() == n and b.shape[-1:] == (n,) and b.dtype == weight.dtype:
                        bias, add = b.reshape(n), u
        lin = nn.Linear(int(k), int(n), bias=bias is not None, dtype=weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(weight.t())
            if bias is not None:
                lin.bias.copy_(bias)
        gm._modules[node.target] = lin  # noqa: SLF001 - onnx2torch modules are direct children
        node.args = (a,)
        if add is not None:
            add.replace_all_uses_with(node)
            gm.graph.erase_node(add)
        count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return count


def onnx_to_module(
    onnx_path_or_model: Any,
    *,
    check_inputs: Sequence[dict[str, np.ndarray]] | dict[str, np.ndarray] | None = None,
    atol: float = 1e-4,
    n_checks: int = 2,
):
    """Rebuild an ONNX model as an ``nn.Module`` (``fx.GraphModule``) and check it against ORT.

    ``check_inputs``: one feed dict (input name -> array) or several; by default ``n_checks`` random
    feeds from the graph's declared input shapes (symbolic dims as 1). The check passes when
    ``|torch - ort| <= atol + atol * |ort|`` element-wise for every output. The returned module is in
    eval mode and accepts the ONNX inputs positionally, in graph order.

    Raises ``CompressionError`` when onnx2torch cannot convert an operator or the outputs disagree,
    ``ModelLoadError`` when the file is not ONNX.
    """
    import onnxruntime as ort
    import torch

    from edgeplan.compressor._vendor.onnx2torch import convert

    model = _load(onnx_path_or_model)
    _extend_converters()
    try:
        module = convert(_fold_constant_identities(model))
        _matmul_to_linear(module)
    except NotImplementedError as e:
        raise CompressionError(f"cannot rebuild the ONNX model as a torch module: {str(e).splitlines()[0][:200]}") from None
    except Exception as e:  # noqa: BLE001 - onnx2torch raises assorted types for unsupported graphs
        raise CompressionError(
            f"cannot rebuild the ONNX model as a torch module ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    module.eval()

    if check_inputs is None:
        feeds_list = [random_feeds(model, seed=s) for s in range(n_checks)]
    elif isinstance(check_inputs, dict):
        feeds_list = [check_inputs]
    else:
        feeds_list = list(check_inputs)

    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CompressionError(f"ONNX Runtime cannot load the model to check the conversion: {str(e).splitlines()[0][:200]}") from None
    input_names = [i.name for i in sess.get_inputs()]
    worst = 0.0
    for feeds in feeds_list:
        ref = sess.run(None, feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in input_names]
        try:
            with torch.no_grad():
                out = module(*args)
        except Exception as e:  # noqa: BLE001
            raise CompressionError(
                f"the module rebuilt from ONNX fails to run ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
            ) from None
        outs = _flatten(out)
        if len(outs) != len(ref):
            raise CompressionError(f"the module rebuilt from ONNX returns {len(outs)} outputs, ONNX Runtime {len(ref)}")
        for o, r in zip(outs, ref):
            o = o.detach().cpu().numpy()
            if o.shape != r.shape:
                raise CompressionError(f"the module rebuilt from ONNX returns shape {o.shape}, ONNX Runtime {r.shape}")
            if o.size == 0:
                continue
            diff = np.abs(o.astype(np.float64) - r.astype(np.float64))
            worst = max(worst, float(diff.max()))
            if np.any(diff > atol + atol * np.abs(r.astype(np.float64))):
                raise CompressionError(
                    f"the module rebuilt from ONNX differs from ONNX Runtime by up to {float(diff.max()):.3g} "
                    f"(tolerance {atol:g}); not pruning a model that does not match the original"
                )
    module.edgeplan_conversion_max_abs_diff = worst  # measured above; reported by prune_model
    return module


def _flatten(out: Any) -> list:
    if isinstance(out, (list, tuple)):
        res = []
        for o in out:
            res.extend(_flatten(o))
        return res
    if isinstance(out, dict):
        return _flatten(list(out.values()))
    return [out]
