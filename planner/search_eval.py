"""The search's evaluator: compress a recipe (cached), evaluate it in two stages, price every cut.

Data convention (documented in ``edgeplan optimize --help``): ``--data FILE`` (an ``.npz``) is the
evaluation set; when a ``train.npz`` lies beside it, that file is used for calibration, Taylor
importance and distillation, else ``FILE`` is split deterministically (30 % eval, 70 % train).
Without ``--data`` every accuracy is *fidelity to the original model on synthetic inputs* (top-1
agreement for classifiers, cosine similarity x 100 otherwise), and the outputs say so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgeplan.hardware_profiles.atomic import atomic_write_text
from edgeplan.planner.pareto import DIRECTIONS, METRIC_OF
from edgeplan.planner.search_config import SearchSettings


class Evaluator:
    """Holds the baseline and data; ``evaluate(recipe)`` returns a JSON-able candidate record."""

    def __init__(self, settings: SearchSettings, out_dir: Path, *, log: Callable[[str], None] | None = None) -> None:
        from edgeplan.compressor.data import load_data, synthetic_data
        from edgeplan.compressor.evaluate import run_onnx
        from edgeplan.hardware_profiles import load_link, load_profile
        from edgeplan.planner.onnx_intake import onnx_for_model

        self.settings = settings
        self.out = out_dir
        self.log = log or (lambda s: None)
        self.target = load_profile(settings.target)
        self.cloud = load_profile(settings.cloud) if settings.cloud else None
        self.link = load_link(settings.link) if settings.cloud else None
        base_dir = out_dir / "baseline"
        base_dir.mkdir(parents=True, exist_ok=True)
        mo = onnx_for_model(settings.model, trust_model=settings.trust_model, input_shape=settings.input_shape,
                            workdir=base_dir)
        self.loaded = mo.loaded
        self.model_sha256 = mo.loaded.sha256
        self.baseline_onnx = base_dir / "model.onnx"
        if mo.onnx_path.resolve() != self.baseline_onnx.resolve():
            shutil.copyfile(mo.onnx_path, self.baseline_onnx)
        self.export_note = mo.export.describe() if mo.export is not None else "ONNX input"
        self.input_names = [i.name for i in self.loaded.inputs]
        self.example_inputs = self.loaded.example_inputs()
        self._eager = None
        # data
        self.train = None
        if settings.data:
            ds = load_data(settings.data)
            sibling = Path(settings.data).with_name("train.npz")
            if sibling.exists() and sibling.resolve() != Path(settings.data).resolve():
                self.train, self.eval = load_data(sibling), ds
            else:
                rng = np.random.default_rng(settings.seed)
                idx = rng.permutation(len(ds))
                k = max(1, int(0.3 * len(ds)))
                from edgeplan.compressor.data import Dataset

                sub = lambda ii: Dataset(ds.inputs[ii], None if ds.labels is None else ds.labels[ii], ds.source)  # noqa: E731
                self.eval, self.train = sub(idx[:k]), sub(idx[k:])
            self.eval = self.eval.take(settings.eval_samples)
        else:
            spec = self.loaded.inputs[0]
            self.eval = synthetic_data(spec.shape[1:], min(settings.eval_samples, 256), seed=settings.seed + 1,
                                       dtype=spec.dtype)
        self.has_data = settings.data is not None
        self.has_labels = self.has_data and self.eval.labels is not None
        self.calib = self.train if self.train is not None else None
        self.ref_outputs = run_onnx(self.baseline_onnx, self.eval.inputs)
        self.metric_name = ("top-1 accuracy (%) on " + str(settings.data)) if self.has_labels else (
            ("fidelity: top-1 agreement with the original (%)" if self._is_classifier() else
             "fidelity: cosine similarity to the original x 100") +
            (" on " + str(settings.data) if self.has_data else " on synthetic inputs (no --data given)"))
        self.baseline_accuracy = self._quality(self.ref_outputs, self.eval.inputs.shape[0])
        self.baseline_latency_ms = self._predict_device_only(self.baseline_onnx)
        self.log(f"baseline: {self.metric_name} = {self.baseline_accuracy:.2f}; predicted latency on "
                 f"{self.target.name} = {self.baseline_latency_ms:.2f} ms")

    # ----------------------------------------------------------------------------------- helpers
    def _is_classifier(self) -> bool:
        y = self.ref_outputs
        return y.ndim == 2 and y.shape[1] > 1

    def _quality(self, outputs: np.ndarray, n: int) -> float:
        from edgeplan.compressor.evaluate import cosine_similarity, top1_accuracy, top1_agreement

        if self.has_labels:
            return 100.0 * top1_accuracy(outputs[:n], self.eval.labels[:n])
        if self._is_classifier():
            return 100.0 * top1_agreement(outputs[:n], self.ref_outputs[:n])
        return 100.0 * cosine_similarity(outputs[:n], self.ref_outputs[:n])

    @property
    def eager(self) -> Any:
        """A trainable nn.Module of the original (converted from ONNX for non-eager formats)."""
        if self._eager is None:
            if self.loaded.is_eager:
                self._eager = self.loaded.module
            else:
                from edgeplan.compressor.onnx_to_torch import onnx_to_module

                self._eager = onnx_to_module(self.baseline_onnx)
        return self._eager

    def _predict_device_only(self, onnx_path: Path) -> float:
        from edgeplan.planner.cost import predict
        from edgeplan.planner.graph import analyse

        return float(predict(analyse(str(onnx_path)), self.target).latency_ms)

    # ------------------------------------------------------------------------------- compression
    def compress(self, recipe: dict[str, dict[str, Any]], cdir: Path) -> tuple[Path, dict[str, Any]]:
        from edgeplan.compressor.passes import apply_recipe

        return apply_recipe(recipe, eager=lambda: self.eager, example_inputs=self.example_inputs,
                            input_names=self.input_names, baseline_onnx=self.baseline_onnx, work_dir=cdir,
                            train=self.calib, seed=self.settings.seed)

    # ------------------------------------------------------------------------------------- plans
    def plans_for(self, onnx_path: Path) -> tuple[list[Any], Any, Any]:
        """(SplitPlans-derived plans, analysis, schedule) for a candidate: device-only, and with a cloud
        the exact best split per objective plus the best prefix cut and cloud-only (a reference)."""
        from edgeplan.planner.cost import predict
        from edgeplan.planner.graph import analyse
        from edgeplan.planner.split import (Objective, SplitOptions, build_problem, link_from_profile, plan_split,
                                            tier_from_prediction)
        from edgeplan.planner.split_schedule import network_schedule

        analysis = analyse(str(onnx_path))
        tiers = [self.target] + ([self.cloud] if self.cloud else [])
        specs = [tier_from_prediction(p, predict(analysis, p)) for p in tiers]
        links = [link_from_profile(self.link)] if self.cloud else []
        problem = build_problem(analysis, specs, links, SplitOptions(**self.settings.given_runtime_costs()))
        objectives = [o for o in ("latency", "energy", "cost") if o in self.settings.objectives] or ["latency"]
        plans: dict[tuple, Any] = {}
        schedule = None
        for o in objectives:
            sp = plan_split(problem, Objective.named(o))
            for p in sp.all() if self.cloud else [sp.device_only]:
                plans.setdefault(tuple(p.node_tiers), p)
            if schedule is None and self.cloud:
                schedule = network_schedule(problem, Objective.named(o))
        return list(plans.values()), analysis, schedule

    # -------------------------------------------------------------------------------- evaluation
    def evaluate(self, recipe: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from edgeplan.compressor.evaluate import run_onnx
        from edgeplan.compressor.passes import is_identity
        from edgeplan.planner.search import recipe_hash, settings_key

        h = recipe_hash(recipe)
        cdir = self.out / "candidates" / h
        # the compressed model depends on the recipe alone; its prices and checks on the search's settings
        cached = cdir / f"result-{settings_key(self.settings, self.model_sha256)}.json"
        if cached.exists():
            return json.loads(cached.read_text())
        cdir.mkdir(parents=True, exist_ok=True)
        onnx_path, info = self.compress(recipe, cdir)
        s = self.settings
        # stage 1: proxy
        n_proxy = min(s.proxy_samples, len(self.eval))
        proxy_out = run_onnx(onnx_path, self.eval.inputs[:n_proxy])
        proxy_acc = self._quality(proxy_out, n_proxy)
        base_proxy = self._quality(self.ref_outputs[:n_proxy], n_proxy)
        plans, analysis, _ = self.plans_for(onnx_path)
        device_only = next(p for p in plans if max(p.node_tiers, default=0) == 0)
        drop_budget = next((c.limit for c in s.constraints if c.metric == "accuracy_drop"), 5.0)
        promising = (base_proxy - proxy_acc) <= drop_budget and device_only.latency_ms <= self.baseline_latency_ms
        evaluation = f"proxy ({n_proxy} samples)"
        accuracy = proxy_acc
        measured = None
        if promising and s.full_eval:
            out = run_onnx(onnx_path, self.eval.inputs)
            accuracy = self._quality(out, len(self.eval))
            evaluation = f"full ({len(self.eval)} samples)"
            measured = self._measure(onnx_path)
            if is_identity(recipe):  # the baseline timed against itself: one model, report the first of the pair
                measured = {**measured, "candidate_ms": measured["baseline_ms"], "speedup": 1.0}
        baseline_acc = self.baseline_accuracy
        rejected = None
        if device_only.latency_ms > self.baseline_latency_ms * 1.0001 and not is_identity(recipe):
            rejected = (f"predicted slower than the baseline on {self.target.name}: "
                        f"{device_only.latency_ms:.2f} ms vs {self.baseline_latency_ms:.2f} ms")
        if measured and measured["speedup"] < 1.0 and not is_identity(recipe):
            note = (f"measured SLOWER than the baseline on this machine: {measured['candidate_ms']:.2f} ms vs "
                    f"{measured['baseline_ms']:.2f} ms")
            info.setdefault("notes", []).append(note)
        size_total = onnx_path.stat().st_size
        param_total = sum(n.param_bytes for n in analysis.nodes) or 1
        plan_dicts = []
        for p in plans:
            dev_params = sum(n.param_bytes for n, t in zip(analysis.nodes, p.node_tiers) if t == 0)
            metrics = {
                "latency_ms": p.latency_ms,
                "energy_mj": p.energy_mj,
                "cost_usd_per_1k": p.cost_usd_per_1k or 0.0,
                "size_mb": size_total * dev_params / param_total / 1e6,
                "accuracy": accuracy,
                "accuracy_drop": baseline_acc - accuracy,
                "peak_memory_mb": p.device_peak_memory_bytes / 2**20,
                "transfer_bytes": p.transfer_bytes,
            }
            if measured and max(p.node_tiers, default=0) == 0:
                metrics["measured_latency_ms_host"] = measured["candidate_ms"]
            feasible = bool(p.feasible) and not p.sends_raw_input and rejected is None
            plan_dicts.append({
                "name": p.name, "key": _plan_key(p), "recipe_hash": h, "metrics": metrics, "feasible": feasible,
                "sends_raw_input": bool(p.sends_raw_input), "is_split": bool(p.is_split),
                "cut_tensors": [c.to_dict() for c in p.cut_tensors], "error_band_pct": p.error_band_pct,
                "constraints_ok": all(c.violation(metrics[c.metric]) <= 0 for c in s.constraints),
            })
        usable = [d for d in plan_dicts if d["feasible"]] or plan_dicts
        first = s.objectives[0]
        sign = 1.0 if DIRECTIONS[first] == "min" else -1.0
        head = min(usable, key=lambda d: sign * d["metrics"][METRIC_OF[first]])
        cons = [c.violation(head["metrics"][c.metric]) for c in s.constraints]
        cons.append(1.0 if rejected else -1.0)
        record = {
            "recipe": recipe, "recipe_hash": h, "onnx": str(onnx_path), "plans": plan_dicts, "head": head["metrics"],
            "constraint_values": cons,
            "summary": {"evaluation": evaluation, "accuracy": accuracy, "accuracy_metric": self.metric_name,
                        "rejected": rejected, "measured": measured, "size_bytes": size_total, **info},
        }
        atomic_write_text(cached, json.dumps(record, indent=1, default=str))
        return record

    def _measure(self, onnx_path: Path) -> dict[str, Any]:
        """Candidate vs baseline, measured side by side (interleaved) in this process."""
        from edgeplan.compressor.ort_timing import default_threads, time_side_by_side

        base, cand = time_side_by_side([self.baseline_onnx, onnx_path], repeats=self.settings.measure_repeats,
                                       warmup=2)
        return {"baseline_ms": base.median_ms, "candidate_ms": cand.median_ms,
                "speedup": base.median_ms / cand.median_ms if cand.median_ms else float("inf"),
                "method": f"measured: ONNX Runtime on this machine, {self.settings.measure_repeats} interleaved "
                          f"runs each, median, {default_threads()} threads"}


def _plan_key(plan: Any) -> str:
    import hashlib

    return plan.name + ":" + hashlib.sha256(bytes(bytearray(int(t) for t in plan.node_tiers))).hexdigest()[:10]

