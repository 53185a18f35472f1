"""A real (small) search end to end, in process: synthetic data, tiny space, 1-epoch training."""

import json

import numpy as np
import pytest
import torch

from aebnas.analysis import load_run, non_dominated_mask
from aebnas.data import load_dataset
from aebnas.nn import build_model
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.operators import GeneResetMutation, GroupUniformCrossover
from aebnas.space import Genome
from aebnas.train import TrainerSettings


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 400, "resolution": 8, "channels": 1,
                         "val_size": 0.25, "test_size": 0.2, "seed": 0})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_space, synthetic):
    run_dir = tmp_path_factory.mktemp("run")
    seed_genome = "k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|off"
    settings = SearchSettings(pop_size=4, generations=2, exit_metric="max_softmax", initial_genomes=(seed_genome,))
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1)
    result = run_search(SearchJob(tiny_space, synthetic, trainer, settings, torch.device("cpu"), run_dir, seed=0,
                                  progress=False))
    return result, seed_genome


def test_run_dir_holds_every_output(finished_run):
    result, seed_genome = finished_run
    run = load_run(result.run_dir)
    assert len(run.evaluations) == 8 and len(result.evaluations) == 8
    assert run.evaluations["key"].is_unique
    assert seed_genome in set(run.evaluations["key"])
    assert list(run.evaluations["generation"].unique()) == [1, 2]
    assert list(run.generations["generation"]) == [1, 2]
    assert (result.run_dir / "pareto.png").stat().st_size > 10_000
    assert not (result.run_dir / "candidates").exists()  # non-Pareto weights are cleaned up
    checkpoint = json.loads((result.run_dir / "checkpoint.json").read_text())
    assert checkpoint["generation"] == 2 and len(checkpoint["population"]) == 4
    assert set(checkpoint["population"]) <= set(run.evaluations["key"])
    assert not list(result.run_dir.rglob("*.tmp*"))
    # without search.final_epochs the answer is the networks as searched: no final columns, no final time
    assert not [c for c in run.pareto.columns if c.startswith(("search_", "final_"))]
    assert run.summary["final_epochs"] == 0 and run.summary["final_training_seconds"] == 0
    # every row's expected MACs follows from its own rates and path costs
    for _, r in run.evaluations.iterrows():
        assert abs(r["expected_macs"] - float(np.dot(r["exit_rates"], r["path_macs"]))) < 1e-6 * r["expected_macs"]
        assert len(r["exit_rates"]) == r["n_exits"] + 1 == len(r["path_macs"])


def test_pareto_set_is_the_non_dominated_evaluations(finished_run):
    result, _ = finished_run
    run = load_run(result.run_dir)
    F = run.evaluations[["objective_0", "objective_1"]].to_numpy()
    front = {tuple(f) for f in F[non_dominated_mask(F)]}
    assert {tuple(f) for f in run.pareto[["objective_0", "objective_1"]].to_numpy()} == front
    assert run.pareto["expected_macs"].is_monotonic_increasing


def test_saved_pareto_model_rebuilds_and_reproduces_test_accuracy(finished_run, synthetic):
    result, _ = finished_run
    run = load_run(result.run_dir)
    model_dir = run.model_dir(len(run.pareto) - 1)
    genome = Genome.from_json((model_dir / "genome.json").read_text())
    metrics = json.loads((model_dir / "metrics.json").read_text())
    model = build_model(genome, metrics["num_classes"], metrics["in_channels"])
    model.load_state_dict(torch.load(model_dir / "model.pt"))
    from aebnas.search.thresholds import confidence, simulate_exits
    from aebnas.train import predict_logits

    logits = predict_logits(model, synthetic.test, synthetic.mean, synthetic.std, torch.device("cpu"))
    correct = logits.argmax(-1) == synthetic.test.y.numpy()[None]
    out = simulate_exits(confidence(logits, "max_softmax"), correct, list(genome.thresholds), metrics["path_macs"])
    assert out.accuracy == pytest.approx(metrics["test_accuracy"])
    assert out.accuracy == pytest.approx(run.pareto.iloc[-1]["test_accuracy"])


def test_threshold_only_changes_reuse_the_trained_network(tiny_space, synthetic, tmp_path):
    from aebnas.search.evaluator import CandidateEvaluator

    ev = CandidateEvaluator(synthetic, TrainerSettings(epochs=1, batch_size=64, device="cpu"),
                            SearchSettings(exit_metric="max_softmax"), torch.device("cpu"), seed=0)
    g = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|t0.5:conv8k3")
    a = ev.evaluate(g)
    b = ev.evaluate(g.with_thresholds([0.5, 0.5]))
    assert b.train_seconds == a.train_seconds  # same cached training
    assert b.head_accuracies == a.head_accuracies
    assert sum(b.exit_rates[:2]) >= sum(a.exit_rates[:2])  # lower thresholds let more samples out early
    assert len(ev._networks) == 1 and len(ev.evaluations) == 2
    # tuning picks from the space's threshold choices
    tuned = CandidateEvaluator(synthetic, TrainerSettings(epochs=1, batch_size=64, device="cpu"),
                               SearchSettings(exit_metric="max_softmax", threshold_tuning=True), torch.device("cpu"))
    assert set(tuned.evaluate(g).thresholds) <= set(tiny_space.config.thresholds)


def test_operators_keep_genes_in_range_and_groups_whole(tiny_space):
    rng = np.random.default_rng(0)
    X = tiny_space.sample_x(rng, 2)
    parents = X[:, None, :].repeat(50, axis=1)  # 2 parents x 50 matings
    children = GroupUniformCrossover(tiny_space)._do(None, parents, random_state=rng)
    for child in children.reshape(-1, tiny_space.n_var):
        for g in tiny_space.groups:  # each group comes whole from one parent
            assert any(np.array_equal(child[g.start:g.stop], p[g.start:g.stop]) for p in X)
    M = GeneResetMutation(tiny_space, gene_prob=1.0)._do(None, X, random_state=rng)
    assert np.all((M >= tiny_space.xl) & (M <= tiny_space.xu))
    varied = tiny_space.xu > 0
    assert np.all(M[:, varied] != X[:, varied])  # with prob 1 every gene takes another choice


def test_existing_run_dir_is_refused(finished_run, tiny_space, synthetic):
    result, _ = finished_run
    with pytest.raises(FileExistsError, match="run dir"):
        run_search(SearchJob(tiny_space, synthetic, TrainerSettings(epochs=1, device="cpu"),
                             SearchSettings(pop_size=2, generations=1), torch.device("cpu"), result.run_dir,
                             progress=False))


def test_diverging_candidates_are_recorded_and_no_feasible_front_still_loads(tiny_space, synthetic, tmp_path):
    """lr=1e12 makes every candidate diverge: the search completes, rows say failed, pareto.csv is empty."""
    trainer = TrainerSettings(epochs=1, batch_size=64, lr=1e12, momentum=0.0, device="cpu")
    result = run_search(SearchJob(tiny_space, synthetic, trainer, SearchSettings(pop_size=2, generations=1),
                        torch.device("cpu"), tmp_path / "run", progress=False))
    run = load_run(result.run_dir)
    assert list(run.evaluations["status"]) == ["failed", "failed"]
    assert run.evaluations["error"].str.startswith("TrainingDiverged").all()
    assert len(run.pareto) == 0 and "genome" in run.pareto.columns
    assert run.summary["failed"] == 2


def test_threshold_tuning_makes_threshold_genes_one_candidate(tiny_space, synthetic):
    from aebnas.search.evaluator import CandidateEvaluator
    from aebnas.search.operators import GenomeDuplicateElimination

    ev = CandidateEvaluator(synthetic, TrainerSettings(epochs=1, batch_size=64, device="cpu"),
                            SearchSettings(exit_metric="max_softmax", threshold_tuning=True), torch.device("cpu"))
    g = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|t0.5:conv8k3")
    a = ev.evaluate(g)
    assert ev.evaluate(g.with_thresholds([0.6, 0.7])) is a
    assert a.key == g.with_thresholds(a.thresholds).key  # the row names the tuned genome
    x, y = tiny_space.encode(g), tiny_space.encode(g.with_thresholds([0.6, 0.7]))
    from pymoo.core.population import Population

    dup = GenomeDuplicateElimination(tiny_space, key=ev.candidate_key).do(Population.new("X", np.array([x, y])),
                                                                             return_indices=True)[1]
    assert len(dup) == 1


def test_injected_failures_are_isolated_and_infrastructure_errors_stop(tiny_space, synthetic, tmp_path, monkeypatch):
    """One candidate raises, one diverges: both recorded as failed, the search completes.
    A disk error stops the run with the archive intact, and a resume finishes it."""
    import aebnas.search.training as training_module
    from aebnas.train import TrainingDiverged

    real_fit = training_module.fit
    calls = {"n": 0}

    def flaky_fit(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected: shape mismatch in candidate")
        if calls["n"] == 2:
            raise TrainingDiverged("injected: loss became nan at step 3")
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training_module, "fit", flaky_fit)
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu")
    settings = SearchSettings(pop_size=4, generations=2, exit_metric="max_softmax")
    result = run_search(SearchJob(tiny_space, synthetic, trainer, settings, torch.device("cpu"), tmp_path / "a",
                                  progress=False))
    run = load_run(result.run_dir)
    failed = run.evaluations[run.evaluations["status"] == "failed"]
    assert list(failed["error"]) == ["RuntimeError: injected: shape mismatch in candidate",
                                     "TrainingDiverged: injected: loss became nan at step 3"]
    assert len(run.evaluations) == 8 and run.summary["failed"] == 2
    assert not set(failed["key"]) & set(run.pareto["genome"])

    calls["n"] = 0

    def disk_full_on_third(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training_module, "fit", disk_full_on_third)
    with pytest.raises(OSError, match="No space left"):
        run_search(SearchJob(tiny_space, synthetic, trainer, settings, torch.device("cpu"), tmp_path / "b",
                             progress=False))
    import sqlite3

    with sqlite3.connect(tmp_path / "b" / "archive.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 2
    monkeypatch.setattr(training_module, "fit", real_fit)
    resumed = run_search(SearchJob(tiny_space, synthetic, trainer, settings, torch.device("cpu"), tmp_path / "b",
                         progress=False, resume=True))
    assert len(load_run(resumed.run_dir).evaluations) == 8


def test_out_of_memory_fails_the_candidate_and_empties_the_cache(tiny_space, synthetic, monkeypatch):
    """The process that ran out of GPU memory (here the search's own) empties its cache before the next candidate."""
    import aebnas.search.training as training_module
    from aebnas.search.evaluator import CandidateEvaluator

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    emptied = []
    monkeypatch.setattr(training_module, "fit", out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    ev = CandidateEvaluator(synthetic, TrainerSettings(epochs=1, device="cpu"), SearchSettings(exit_metric="max_softmax"),
                            torch.device("cpu"))
    result = ev.evaluate(tiny_space.smallest())
    assert result.status == "failed" and result.error.startswith("OutOfMemoryError: CUDA out of memory")
    assert emptied == [True]


def _search_again_with_final_epochs(finished_run, tiny_space, synthetic, tmp_path):
    """finished_run's search (same seed, settings and data) with search.final_epochs=2."""
    settings = SearchSettings(pop_size=4, generations=2, exit_metric="max_softmax", initial_genomes=(finished_run[1],),
                              final_epochs=2)
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1)
    return run_search(SearchJob(tiny_space, synthetic, trainer, settings, torch.device("cpu"), tmp_path / "run", seed=0,
                      progress=False))


def test_final_epochs_train_the_pareto_networks_further(finished_run, tiny_space, synthetic, tmp_path):
    """search.final_epochs: the same search (same seed), then each Pareto network trained further from its
    candidate weights; the saved network is the trained one, and the search's figures are kept beside it."""
    from aebnas.search.thresholds import confidence, simulate_exits
    from aebnas.train import predict_logits

    before, result = finished_run[0], _search_again_with_final_epochs(finished_run, tiny_space, synthetic, tmp_path)
    searched, final = load_run(before.run_dir).pareto, load_run(result.run_dir).pareto
    # the search itself is unchanged: the same answer, whose figures are kept as search_*
    assert list(final["search_key"]) == list(searched["genome"])
    assert list(final["search_val_accuracy"]) == pytest.approx(list(searched["val_accuracy"]))
    assert list(final["search_test_accuracy"]) == pytest.approx(list(searched["test_accuracy"]))
    assert list(final["search_expected_macs"]) == pytest.approx(list(searched["expected_macs"]))
    assert (final["final_epochs"] == 2).all() and final["final_error"].isna().all()  # "" reads back as NaN
    for i in range(len(final)):
        d_before, d_final = load_run(before.run_dir).model_dir(i), load_run(result.run_dir).model_dir(i)
        w_before, w_final = torch.load(d_before / "model.pt"), torch.load(d_final / "model.pt")
        assert any(not torch.equal(w_before[k], w_final[k]) for k in w_final if w_final[k].is_floating_point())
        # the row's val and test figures are the saved (further trained) network's own
        genome = Genome.from_json((d_final / "genome.json").read_text())
        model = build_model(genome, synthetic.num_classes, synthetic.in_channels)
        model.load_state_dict(w_final)
        for split, column in ((synthetic.val, "val_accuracy"), (synthetic.test, "test_accuracy")):
            logits = predict_logits(model, split, synthetic.mean, synthetic.std, torch.device("cpu"))
            correct = logits.argmax(-1) == split.y.numpy()[None]
            out = simulate_exits(confidence(logits, "max_softmax"), correct, list(genome.thresholds),
                                 final.iloc[i]["path_macs"])
            assert out.accuracy == pytest.approx(final.iloc[i][column])
    assert not (result.run_dir / "candidates").exists()
    summary = load_run(result.run_dir).summary
    assert summary["final_epochs"] == 2 and summary["final_training_seconds"] > 0


def test_final_epochs_must_be_a_count():
    from aebnas.search.settings import SearchConfigError

    with pytest.raises(SearchConfigError, match="search.final_epochs"):
        SearchSettings.from_dict({"final_epochs": -1})
    with pytest.raises(SearchConfigError, match="search.final_epochs"):
        SearchSettings.from_dict({"final_epochs": 1.5})


def test_a_failed_final_training_keeps_the_searched_network(finished_run, tiny_space, synthetic, tmp_path,
                                                             monkeypatch):
    import aebnas.search.training as training
    from aebnas.train.trainer import TrainingDiverged

    real_fit = training.fit

    def diverging_final_fit(model, data, cfg, *args, **kwargs):
        if cfg.epochs == 2:  # the final training's schedule; candidates train 1 epoch
            raise TrainingDiverged("loss became nan by step 3")
        return real_fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(training, "fit", diverging_final_fit)
    before, result = finished_run[0], _search_again_with_final_epochs(finished_run, tiny_space, synthetic, tmp_path)
    searched, kept = load_run(before.run_dir).pareto, load_run(result.run_dir).pareto
    assert (kept["final_epochs"] == 0).all()
    assert kept["final_error"].str.startswith("TrainingDiverged: loss became nan").all()
    assert list(kept["test_accuracy"]) == pytest.approx(list(searched["test_accuracy"]))
    assert list(kept["search_test_accuracy"]) == pytest.approx(list(searched["test_accuracy"]))
    w_before = torch.load(load_run(before.run_dir).model_dir(0) / "model.pt")
    w_kept = torch.load(load_run(result.run_dir).model_dir(0) / "model.pt")
    assert all(torch.equal(w_before[k], w_kept[k]) for k in w_before)


def test_final_training_trains_a_network_once_and_retunes_its_thresholds(tiny_space, synthetic, tmp_path,
                                                                         monkeypatch):
    """Two threshold vectors of one network on the front: one final training; with tuning on, the thresholds
    are tuned again from the trained network's own val confidences."""
    from aebnas.search.evaluator import CandidateEvaluator
    from aebnas.search.thresholds import confidence, tune_thresholds
    from aebnas.search.training import CandidateTraining
    from aebnas.train import predict_logits

    settings = SearchSettings(exit_metric="max_softmax", threshold_tuning=True)
    ev = CandidateEvaluator(synthetic, TrainerSettings(epochs=1, batch_size=64, device="cpu"), settings,
                            torch.device("cpu"), seed=0, model_dir=tmp_path)
    g = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|t0.5:conv8k3")
    searched = ev.evaluate(g)
    starts = []
    real_train = CandidateTraining.train

    def recording_train(self, genome, weights_file=None, epochs=None):
        starts.append((weights_file, epochs))
        return real_train(self, genome, weights_file, epochs)

    monkeypatch.setattr(CandidateTraining, "train", recording_train)
    first = ev.final_training(searched, tiny_space.parse(searched.key), 2)
    second = ev.final_training(searched, g.with_thresholds([0.5, 0.5]), 2)
    assert starts == [(searched.model_file, 2)]
    assert first.model_file.endswith(".final.pt") and first.model_file != searched.model_file
    assert second.key == first.key and second.val_accuracy == first.val_accuracy
    # the figures are those of the saved, further-trained weights, thresholds tuned on them
    model = build_model(g, synthetic.num_classes, synthetic.in_channels)
    model.load_state_dict(torch.load(first.model_file))
    logits = predict_logits(model, synthetic.val, synthetic.mean, synthetic.std, torch.device("cpu"))
    correct = logits.argmax(-1) == synthetic.val.y.numpy()[None]
    tuned = tune_thresholds(confidence(logits, "max_softmax"), correct, first.path_macs,
                            tiny_space.config.thresholds, settings.max_accuracy_drop)
    assert list(first.thresholds) == list(tuned)
    assert first.head_accuracies == pytest.approx([float(c.mean()) for c in correct])
    assert len(ev.evaluations) == 1  # final trainings are not evaluations of the search
