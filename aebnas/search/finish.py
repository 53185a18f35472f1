"""The search's finish: the Pareto networks trained further when asked, scored once on test, saved.

The test split is touched here only, once per Pareto network, after the search
has chosen them; pareto.csv and models/ are written from these scores.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aebnas.cost import expected_cost
from aebnas.nn import build_model
from aebnas.search.archive import write_csv_atomic, write_text_atomic
from aebnas.search.evaluator import LIST_FIELDS, CandidateEvaluator, Evaluation
from aebnas.search.thresholds import confidence, simulate_exits
from aebnas.search.training import short_hash
from aebnas.space import Genome, SearchSpace
from aebnas.train import predict_logits

log = logging.getLogger("aebnas.search")

PARETO_COLUMNS = ["genome", "val_accuracy", "test_accuracy", "expected_macs", "test_expected_macs", "static_macs",
                  "model_dir"]


def finish_search(front: list[Evaluation], evaluator: CandidateEvaluator, space: SearchSpace, run_dir: Path,
                  progress: bool = True) -> tuple[list[dict[str, Any]], float]:
    """pareto.csv (and models/) for ``front``; returns its rows and the seconds final training took."""
    settings = evaluator.settings
    start = time.perf_counter()
    rows = _finalise_pareto(front, evaluator, space, run_dir, progress)
    final_seconds = time.perf_counter() - start if settings.final_epochs else 0.0
    write_csv_atomic(run_dir / "pareto.csv", rows, columns=None if rows else PARETO_COLUMNS)
    if not rows:
        log.warning("no feasible candidate: every one broke a search budget (max_expected_macs/latency_ms) or failed; "
                    "raise the budget or the search size")
    return rows, final_seconds


def _finalise_pareto(front: list[Evaluation], evaluator: CandidateEvaluator, space: SearchSpace, run_dir: Path,
                     progress: bool) -> list[dict[str, Any]]:
    """Train each Pareto network further when ``search.final_epochs`` asks, score it once on test, save it."""
    settings = evaluator.settings
    models_dir = run_dir / "models"
    shutil.rmtree(models_dir, ignore_errors=True)  # a resumed run writes them anew; none may be left from before
    if settings.final_epochs and front:
        log.info("final training: %d Pareto network(s), %d epoch(s) each", len(front), settings.final_epochs)
    rows = []
    for rank, searched in enumerate(tqdm(front, desc="final training", unit="net",
                                         disable=not (progress and settings.final_epochs))):
        ev, final_error = _trained_further(searched, evaluator, space, rank)
        genome = space.parse(ev.key)  # thresholds as evaluated (tuned ones when tuning is on)
        model, correct, outcome = _on_test(genome, ev, evaluator)
        if ev is not searched and not ev.feasible:
            log.warning("Pareto network %d breaks a search budget after its final training (constraints %s); "
                        "pareto.csv keeps it, marked feasible=False", rank, ev.constraints)
        row = ev.to_row()
        row.update({
            "genome": genome.to_text(),
            "test_accuracy": outcome.accuracy,
            "test_expected_macs": outcome.expected_cost,
            "test_expected_latency_ms": (expected_cost(outcome.exit_rates, ev.path_latency_ms) if ev.path_latency_ms
                                         else None),
            "test_exit_rates": json.dumps(list(outcome.exit_rates)),
            "test_static_accuracy": float(correct[-1].mean()),
        })
        if settings.final_epochs:
            searched_test = outcome if ev is searched else _on_test(space.parse(searched.key), searched,
                                                                    evaluator)[2]
            row.update({"final_epochs": 0 if final_error else settings.final_epochs, "final_error": final_error,
                        "search_key": searched.key, "search_val_accuracy": searched.val_accuracy,
                        "search_expected_macs": searched.expected_macs,
                        "search_expected_latency_ms": searched.expected_latency_ms,
                        "search_test_accuracy": searched_test.accuracy})
        if settings.save_models:
            row["model_dir"] = str(_save_model(model, genome, row, evaluator, models_dir / f"{rank:02d}_"
                                           f"{short_hash(genome.key, 8)}").relative_to(run_dir))
        rows.append(row)
    return rows


def _trained_further(searched: Evaluation, evaluator: CandidateEvaluator, space: SearchSpace,
                     rank: int) -> tuple[Evaluation, str]:
    """``searched`` after ``search.final_epochs`` more epochs, or as searched (with the reason) when that failed."""
    epochs = evaluator.settings.final_epochs
    if not epochs:
        return searched, ""
    try:
        return evaluator.final_training(searched, space.parse(searched.key), epochs), ""
    except OSError:
        raise  # the machine, not the network: disk full, dataset gone
    except Exception as exc:  # diverged, out of memory: the search's network is still an answer
        final_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        log.warning("final training of Pareto network %d failed (%s); it is kept as the search evaluated it",
                    rank, final_error)
        return searched, final_error


def _save_model(model: torch.nn.Module, genome: Genome, row: dict[str, Any], evaluator: CandidateEvaluator,
                out: Path) -> Path:
    """``out``: the weights, the genome and the metrics with everything needed to rebuild and feed the network."""
    data, settings = evaluator.data, evaluator.settings
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt.tmp")
    (out / "model.pt.tmp").replace(out / "model.pt")
    write_text_atomic(out / "genome.json", genome.dumps())
    metrics = {k: (json.loads(v) if k in ("test_exit_rates", *LIST_FIELDS) else v)
               for k, v in row.items() if k not in ("constraints",)}
    metrics.update({"num_classes": data.num_classes, "in_channels": data.in_channels,
                    "resolution": data.resolution, "exit_metric": settings.exit_metric,
                    "mean": list(data.mean), "std": list(data.std)})
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
    return out


def _on_test(genome: Genome, ev: Evaluation, evaluator: CandidateEvaluator) -> tuple[torch.nn.Module, np.ndarray, Any]:
    """``ev``'s saved network under ``genome``'s thresholds on the test split: the model, which exits are right
    for which image, and the exit simulation (accuracy, rates, expected cost)."""
    data, training = evaluator.data, evaluator.training
    model = build_model(genome, data.num_classes, data.in_channels)
    model.load_state_dict(torch.load(ev.model_file, map_location="cpu"))
    logits = predict_logits(model, data.test, data.mean, data.std, training.device, training.trainer.eval_batch_size,
                            training.trainer.amp)
    correct = logits.argmax(-1) == data.test.y.numpy()[None, :]
    outcome = simulate_exits(confidence(logits, training.exit_metric), correct, list(genome.thresholds),
                             ev.path_macs)
    return model, correct, outcome


def draw_pareto(run_dir: Path, title: str, cost_column: str) -> None:
    """pareto.png from the finished run directory; a plot must never cost the results."""
    try:
        from aebnas.analysis.plots import plot_pareto
        from aebnas.analysis.run import load_run

        run = load_run(run_dir)
        plot_pareto(run.evaluations, run.pareto, run_dir / "pareto.png", title=title, cost=cost_column)
    except Exception as exc:
        log.warning("could not draw pareto.png: %s", exc)
