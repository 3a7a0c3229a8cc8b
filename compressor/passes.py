"""The compression passes a search can combine, in the order they are applied.

Each pass is a pydantic config class with ``search_space()`` (a tuple of ``SearchParam``): the search
builds its Optuna space from this registry, never from a hand-kept list. ``apply_recipe`` applies a
recipe (``{"prune": {...}, "distill": {...}, "quantize": {...}}``) to a model:

    prune (torch-pruning, on the eager module) -> distill (pruned student from the original teacher)
    -> export to ONNX -> quantize (ONNX Runtime, on the ONNX file)

A recipe with ``prune.ratio == 0`` and ``quantize.mode == "none"`` is the identity (the baseline).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from edgeplan.compressor.distill import DistillConfig
from edgeplan.compressor.prune_config import PruneConfig
from edgeplan.compressor.quantize import QuantizeConfig

PASSES: dict[str, Any] = {"prune": PruneConfig, "distill": DistillConfig, "quantize": QuantizeConfig}


def is_identity(recipe: dict[str, dict[str, Any]]) -> bool:
    return recipe.get("prune", {}).get("ratio", 0.0) <= 0.0 and recipe.get("quantize", {}).get("mode", "none") == "none"


def apply_recipe(
    recipe: dict[str, dict[str, Any]],
    *,
    eager: Callable[[], Any],
    example_inputs: tuple,
    input_names: Sequence[str],
    baseline_onnx: Path,
    work_dir: Path,
    train: Any = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Apply ``recipe`` and return (``work_dir/candidate.onnx``, facts about what each pass did).

    ``eager`` returns a trainable nn.Module of the original (called only when pruning is asked for).
    ``train`` (a Dataset or None) feeds Taylor importance, distillation and int8 calibration; without
    it calibration uses synthetic inputs and the quantize facts say so.
    """
    from edgeplan.compressor.export import export_onnx

    info: dict[str, Any] = {"notes": []}
    work_dir.mkdir(parents=True, exist_ok=True)
    fp32 = baseline_onnx
    ratio = float(recipe.get("prune", {}).get("ratio", 0.0))
    if ratio > 0.0:
        from edgeplan.compressor.prune import prune_module

        p = recipe["prune"]
        cfg = PruneConfig.build(ratio=ratio, round_to=p.get("round_to"), importance=p.get("importance", "magnitude"))
        teacher = eager()
        res = prune_module(teacher, example_inputs, cfg, data=train if cfg.importance == "taylor" else None)
        module = res.module
        info["prune"] = {"macs_before": res.macs_before, "macs_after": res.macs_after,
                         "params_before": res.params_before, "params_after": res.params_after,
                         "skipped_groups": len(res.skipped)}
        epochs = int(recipe.get("distill", {}).get("epochs", 0))
        if epochs > 0 and train is not None:
            from edgeplan.compressor.distill import distill

            d = recipe["distill"]
            dcfg = DistillConfig.build(epochs=epochs, temperature=d.get("temperature", 4.0), seed=seed)
            dres = distill(module, teacher, train, dcfg)
            module = dres.student
            info["distill"] = {"epochs_run": dres.epochs_run, "best_val_metric": dres.best_val_metric,
                               "val_metric": dres.val_metric_name, "data_mode": dres.data_mode}
        fp32 = work_dir / "fp32.onnx"
        rep = export_onnx(module, example_inputs, fp32, input_names=list(input_names))
        if not rep.matched:
            info["notes"].append(rep.describe())
    out = work_dir / "candidate.onnx"
    qparams = {k: v for k, v in recipe.get("quantize", {}).items()}
    qcfg = (QuantizeConfig.from_params(qparams, timing_repeats=10, accuracy_fallback=False, seed=seed)
            if qparams.get("mode", "none") != "none" else None)
    if qcfg is not None:
        from edgeplan.compressor.quantize import quantize_onnx

        q = quantize_onnx(fp32, out, qcfg, data=train)
        info["quantize"] = {"mode": q.mode, "calibration_source": q.calibration_source, "speedup": q.speedup,
                            "slower_than_fp32": q.slower_than_fp32, "message": q.message,
                            "excluded_nodes": len(q.excluded_nodes)}
        if q.slower_than_fp32:
            info["notes"].append(q.message)
    else:
        shutil.copyfile(fp32, out)
    return out, info
