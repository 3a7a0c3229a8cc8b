"""``edgeplan optimize``: an Optuna multi-objective search over compression x split.

How one trial works (``_Evaluator.evaluate``):
1. The trial draws a *recipe* from the compression passes' own declared spaces
   (``compressor.passes.PASSES``: pruning, distillation, quantization; each pass's ``search_space()``).
2. The recipe is compressed once and cached by its hash under ``OUT/candidates/<hash>/`` (a repeat
   costs nothing, also across resumed runs).
3. Two-stage evaluation: a cheap proxy (accuracy/fidelity on ``proxy_samples`` inputs, predicted
   latency) screens the candidate; a promising one (proxy within the accuracy budget and predicted
   faster than the baseline) gets the full evaluation: the whole eval set and measured latency on
   this machine, side by side with the baseline in the same run.
4. Every cut the split planner finds for the candidate (device-only, and with a cloud the exact best
   split for each objective plus the best prefix cut) becomes a *plan*; all plans go to a pool, and
   the Pareto front is computed over (compression, cut) pairs from that pool (``planner.pareto``).
   The trial reports to Optuna the objectives of its best plan for the first objective.
5. Constraints are given to Optuna through ``constraints_func``. Candidates predicted slower than the
   uncompressed baseline on the target are rejected (reported, never on the front).

Storage is an Optuna RDB storage: SQLite in the output folder by default (re-running the same command
resumes; heartbeats mark a trial killed mid-way as failed and it is retried), or
``--storage postgresql://...`` for several ``--worker`` processes on several machines.
"""

from __future__ import annotations

import hashlib
import os
import socket
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgeplan.hardware_profiles.errors import ConfigError, InputError
from edgeplan.planner.pareto import DIRECTIONS, METRIC_OF
from edgeplan.planner.search_config import SearchSettings



@dataclass(frozen=True)
class SearchProgress:
    trials_done: int
    trials_total: int
    elapsed_s: float
    best: dict[str, float]  # best value seen so far per objective (feasible plans)
    message: str = ""


@dataclass(frozen=True)
class SearchResult:
    out_dir: Path
    settings: SearchSettings
    front: list[dict[str, Any]]
    pool_size: int
    trials_complete: int
    trials_failed: int
    rejected: list[dict[str, Any]]
    baseline: dict[str, Any]
    bundles: list[Path]
    interrupted: bool
    elapsed_s: float
    files: dict[str, Path] = field(default_factory=dict)


def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _applicable(pass_name: str, param: str, recipe: dict[str, dict[str, Any]], has_data: bool) -> bool:
    """Which declared parameters a trial asks for, given what it drew before (documented rules):
    Taylor importance needs data; distillation needs data and a pruned student."""
    if pass_name == "prune" and param == "importance":
        return has_data
    if pass_name == "prune" and param != "ratio":
        return recipe.get("prune", {}).get("ratio", 0.0) > 0.0
    if pass_name == "distill":
        return has_data and recipe.get("prune", {}).get("ratio", 0.0) > 0.0 and (
            param == "epochs" or recipe["distill"].get("epochs", 0) > 0)
    if pass_name == "quantize" and param != "mode":
        return recipe.get("quantize", {}).get("mode", "none") != "none"
    return True


def suggest_recipe(trial: Any, has_data: bool) -> dict[str, dict[str, Any]]:
    """Draw a recipe from every registered pass's declared search space."""
    from edgeplan.compressor.passes import PASSES

    recipe: dict[str, dict[str, Any]] = {}
    for name, cfg_cls in PASSES.items():
        recipe[name] = {}
        for p in cfg_cls.search_space():
            if _applicable(name, p.name, recipe, has_data):
                recipe[name][p.name] = p.suggest(trial, prefix=f"{name}.")
    return recipe


def _overhead_key(settings: SearchSettings) -> list:
    """A non-default request overhead or serialise rate prices plans differently: part of the study's identity
    (a default adds nothing, so studies made before the settings existed still resume)."""
    return [f"{k}={v:g}" for k, v in settings.given_runtime_costs().items()]


def settings_key(settings: SearchSettings, model_sha: str) -> str:
    """12 hex digits identifying everything that prices and judges a candidate (model, target, cloud, link,
    data, objectives, constraints, runtime costs): the default study name, and the name of a candidate's
    cached result, so a study with other settings in the same folder never reuses another's prices."""
    key = json.dumps([model_sha, settings.target, settings.cloud, settings.link, settings.data,
                      list(settings.objectives), [str(c) for c in settings.constraints]]
                     + _overhead_key(settings))
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _default_study_name(settings: SearchSettings, model_sha: str) -> str:
    return "edgeplan-" + settings_key(settings, model_sha)


def make_storage(url: str):
    """Optuna RDB storage with heartbeats, so a trial killed mid-way is failed and retried on resume."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    import random
    import time

    # Workers started together against a fresh database race to create Optuna's tables; the loser gets a
    # unique-violation / "already exists" error (seen in CI: two workers, new PostgreSQL). The schema is there
    # a moment later, so such errors are retried a few times with a short random back-off.
    for attempt in range(6):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=5, grace_period=15,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
                                  engine_kwargs={"pool_pre_ping": True} if url.startswith("postgresql") else None)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy/driver errors vary by backend
            text = str(e)
            racing = any(k in text for k in ("duplicate key", "already exists", "UniqueViolation", "IntegrityError"))
            if racing and attempt < 5:
                time.sleep(0.2 + random.random() * 0.5 * (attempt + 1))
                continue
            raise InputError(f"cannot open study storage {url.split('@')[-1]}: {text.splitlines()[0][:160]}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _sampler(settings: SearchSettings):
    """Samplers read the constraints each trial sets with ``trial.set_constraint`` (Optuna >= 5)."""
    import optuna

    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=settings.seed, multivariate=True,
                                          n_startup_trials=min(8, max(2, settings.trials // 3)))
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=settings.seed)
    return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=max(4, min(20, settings.trials // 3)))


def _fail_orphaned_trials(study: Any) -> None:
    """With the default per-output-folder SQLite study, no other process runs its trials: a trial still
    RUNNING at start-up was left by a killed run. Mark it failed and queue its parameters again (the
    heartbeat would do the same, but only after its grace period)."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted: the run was killed during this trial")
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def run_search(
    settings: SearchSettings,
    *,
    worker: bool = False,
    progress: Callable[[SearchProgress], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Run (or resume, or join as a worker) the study and write the outputs. See the module docstring."""
    import optuna

    from edgeplan.planner.search_eval import Evaluator

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported in report.md
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    say = log or (lambda s: None)
    if worker and not settings.storage:
        raise ConfigError("--worker needs --storage URL (a study shared by several processes)")
    ev = Evaluator(settings, out, log=say)
    storage_url = settings.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    storage = make_storage(storage_url)
    study_name = settings.study_name or _default_study_name(settings, ev.model_sha256)
    directions = ["minimize" if DIRECTIONS[o] == "min" else "maximize" for o in settings.objectives]
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                sampler=_sampler(settings), load_if_exists=True)
    saved = study.user_attrs.get("settings_key")
    key = [list(settings.objectives), settings.target, settings.cloud, settings.link, settings.data] + _overhead_key(
        settings)
    if saved is not None and saved != key:
        raise ConfigError(f"study {study_name!r} exists with other settings {saved}; pass --study NAME for a new one")
    if saved is None:
        study.set_user_attr("settings_key", key)
    if not settings.storage:
        _fail_orphaned_trials(study)
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    # the uncompressed baseline is always in the study (its plans are the reference plans); a resumed or
    # final run that finds it still waiting runs it even when the trial budget is spent
    study.enqueue_trial({"prune.ratio": 0.0, "quantize.mode": "none"}, skip_if_exists=True)
    waiting = any(t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
    remaining = max(settings.trials - len(done), int(waiting))
    interrupted = False
    best: dict[str, float] = {}
    worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def objective(trial: Any) -> list[float]:
        recipe = suggest_recipe(trial, has_data=ev.has_data)
        trial.set_user_attr("recipe", recipe)
        trial.set_user_attr("worker", worker_id)
        try:
            cand = ev.evaluate(recipe)
        except Exception as e:  # recorded for report.md; Optuna marks the trial failed and goes on
            trial.set_user_attr("error", f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
            raise
        trial.set_user_attr("candidate", cand["summary"])
        trial.set_user_attr("plans", cand["plans"])
        trial.set_user_attr("constraint_values", cand["constraint_values"])
        for i, v in enumerate(cand["constraint_values"]):  # Optuna's constraints mechanism (<= 0 feasible)
            trial.set_constraint(f"c{i}", float(v))
        head = cand["head"]
        return [float(head[METRIC_OF[o]]) for o in settings.objectives]

    def on_trial(study_: Any, trial: Any) -> None:
        n = len([t for t in study_.get_trials(deepcopy=False) if t.state.is_finished()])
        for p in trial.user_attrs.get("plans", []):
            if not p.get("feasible", True):
                continue
            for o in settings.objectives:
                v = p["metrics"].get(METRIC_OF[o])
                if v is None:
                    continue
                cur = best.get(o)
                better = cur is None or (v < cur if DIRECTIONS[o] == "min" else v > cur)
                best[o] = v if better else cur
        if progress:
            progress(SearchProgress(min(n, settings.trials), settings.trials, time.time() - t_start, dict(best)))

    if remaining:
        try:
            # MaxTrialsCallback: several --worker processes stop together once the study has `trials` done
            stop_at = optuna.study.MaxTrialsCallback(settings.trials, states=(optuna.trial.TrialState.COMPLETE,))
            study.optimize(objective, n_trials=remaining, timeout=settings.timeout_s, callbacks=[on_trial, stop_at],
                           catch=(Exception,), gc_after_trial=True)
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: keeping the finished trials (re-run the same command to resume)")
    if worker:
        trials = study.get_trials(deepcopy=False)
        return SearchResult(out, settings, [], 0, sum(t.state.name == "COMPLETE" for t in trials),
                            sum(t.state.name == "FAIL" for t in trials), [], {}, [], interrupted, time.time() - t_start)
    from edgeplan.planner.search_output import write_outputs

    return write_outputs(study, ev, settings, out, interrupted=interrupted, elapsed_s=time.time() - t_start, log=say)


__all__ = ["SearchProgress", "SearchResult", "recipe_hash", "run_search", "settings_key", "suggest_recipe",
           "make_storage"]
