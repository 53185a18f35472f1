"""The surrogate-assisted search: predictors, the spread selection, the loop's pieces, its settings and configs,
and one real in-process run with a failing candidate."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from aebnas.search import Evaluation, SearchConfigError, SearchSettings
from aebnas.search.msunas import (Featurizer, Surrogate, latin_hypercube, propose, rates_from_survival,
                                  survival)
from aebnas.search.objectives import objective_values
from aebnas.search.predictors import MODELS, make_predictor
from aebnas.search.predictors.adaptive import kendall_tau
from aebnas.search.selection import spread_subset
from tests.conftest import compose_config


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """As the search fits them: small models, and a BLAS pool on a busy shared CPU only slows them down."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _synthetic_function(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """30 integer genes of 4 levels; a smooth non-linear target plus a little noise."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 4, size=(n, 30)).astype(float)
    y = np.sin(X[:, :4].sum(axis=1) / 4) + 0.15 * X[:, 4:10].sum(axis=1) - 0.05 * X[:, 10] ** 2
    return X, y + rng.normal(0, 0.05, n)


# held-out Kendall tau measured: mlp 0.82, rbf 0.74, gp 0.73, trees 0.55 (axis-aligned splits fit a sum of many
# genes worst), adaptive 0.82 (it picks the MLP)
@pytest.mark.parametrize("name, least", [("mlp", 0.7), ("rbf", 0.65), ("gp", 0.65), ("trees", 0.45),
                                         ("adaptive", 0.7)])
def test_predictor_ranks_a_known_function(name, least):
    X, y = _synthetic_function(300, 0)
    model = make_predictor(name, seed=0).fit(X[:200], y[:200])
    tau = kendall_tau(y[200:], model.predict(X[200:]))
    assert tau > least, f"{name}: held-out Kendall tau {tau:.3f}"


def test_adaptive_switching_keeps_the_best_cross_validated_model():
    X, y = _synthetic_function(150, 1)
    model = make_predictor("adaptive", seed=0).fit(X, y)
    assert set(model.cv_scores_) == set(MODELS)
    assert model.chosen_ == max(model.cv_scores_, key=model.cv_scores_.get)
    assert np.allclose(model.predict(X[:5]), make_predictor(model.chosen_, seed=0).fit(X, y).predict(X[:5]))
    # a score that prefers bad ranking flips the choice
    flipped = make_predictor("adaptive", seed=0, score=lambda a, b: -kendall_tau(a, b)).fit(X, y)
    assert flipped.chosen_ == min(model.cv_scores_, key=model.cv_scores_.get)


def test_spread_subset_takes_the_front_and_spreads_along_it():
    t = np.linspace(0, 1, 41)
    front = np.c_[t, 1 - np.sqrt(t)]
    F = np.vstack([front + 0.2, front])  # the second 41 rows dominate the first
    picks = spread_subset(F, 5)
    assert len(set(picks)) == 5 and all(p >= 41 for p in picks)
    chosen = F[picks]
    assert {0, 40} <= {p - 41 for p in picks}  # both ends of the front
    Z = (chosen - front.min(axis=0)) / np.ptp(front, axis=0)
    closest = min(np.linalg.norm(a - b) for i, a in enumerate(Z) for b in Z[i + 1:])
    assert closest > 0.25  # spread (the front is about 1.6 long: 5 points at most ~0.4 apart), not clustered
    # points already trained count as covered: the picks avoid them
    covered = front[[0, 40, 20]]
    again = spread_subset(F, 2, covered=covered)
    assert not {p - 41 for p in again} & {0, 40, 20}
    # infeasible rows come last, and fewer rows than asked returns them all
    cv = np.zeros(len(F))
    cv[41:] = 1.0
    assert all(p < 41 for p in spread_subset(F, 3, cv=cv))
    assert spread_subset(F[:3], 5) == [0, 1, 2]


def test_spread_subset_caps_the_picks_of_one_group():
    """A narrow front held by one backbone: the cap sends the other picks to other backbones, down the fronts."""
    F = np.array([[0.20, 0.00], [0.21, 0.00], [0.20, 0.01], [0.22, 0.00], [0.20, 0.02],  # backbone a
                  [0.25, 0.00], [0.30, 0.00], [0.26, 0.05], [0.40, 0.00]])  # backbones b, c, d, e
    groups = ["a"] * 5 + ["b", "c", "d", "e"]
    free = spread_subset(F, 4)
    assert [groups[i] for i in free] == ["a"] * 4  # uncapped: every pick on the one backbone
    capped = spread_subset(F, 4, groups=groups, cap=2)
    assert len(set(capped)) == 4 and 0 in capped  # the predicted best stays picked
    others = [groups[i] for i in capped if groups[i] != "a"]
    assert len(others) == 2 and "b" in others  # b: the best row off backbone a, alone on its front
    # one backbone only: the cap gives way and k rows still come back
    assert sorted(spread_subset(F[:5], 4, groups=["a"] * 5, cap=2)) == sorted(free)
    # feasible rows of a full group come before any infeasible row; infeasible rows obey the cap too
    cv = np.r_[np.zeros(5), np.ones(4)]
    picks = spread_subset(F, 7, cv=cv, groups=groups, cap=2)
    assert sorted(picks[:5]) == [0, 1, 2, 3, 4] and picks[5:] == spread_subset(F, 7, cv=cv)[5:]
    # a0-a2 feasible; a3 and a4 infeasible but far from them, so uncapped they are the next picks
    G = np.vstack([F[:3], [[0.20, 0.30], [0.50, 0.00]], F[5:]])
    cv = np.r_[np.zeros(3), np.ones(6)]
    assert spread_subset(G, 5, cv=cv) == [0, 1, 2, 4, 3]
    picks = spread_subset(G, 5, cv=cv, groups=groups, cap=2)
    assert sorted(picks[:3]) == [0, 1, 2] and {groups[i] for i in picks[3:]} <= {"b", "c", "d", "e"}
    assert len(set(picks[3:])) == 2
    with pytest.raises(ValueError, match="one label per row"):
        spread_subset(F, 4, groups=groups[:3], cap=2)
    # a cap that cannot bind (k picks or more per group) picks exactly what no cap picks
    rng = np.random.default_rng(0)
    G = rng.random((40, 2))
    labels = list(rng.integers(0, 3, 40))
    assert spread_subset(G, 8, G[:3], groups=labels, cap=8) == spread_subset(G, 8, G[:3])


def test_exit_rates_round_trip_through_survival(tiny_space):
    genome = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|t0.8:conv8k3|off")
    ev = Evaluation(key=genome.key, network_key=genome.network_key, generation=1, val_accuracy=0.9,
                    expected_macs=0.0, static_macs=1, total_macs=1, params=1, n_exits=2, exit_stages=[1, 3],
                    thresholds=[0.9, 0.8], path_macs=[1, 2, 3], exit_rates=[0.5, 0.3, 0.2],
                    exit_accuracies=[1, 1, 1], head_accuracies=[1, 1, 1], static_val_accuracy=0.9,
                    train_seconds=0, eval_seconds=0)
    s = survival(ev, 4, [1, 2, 3, 4])
    assert np.allclose(s, [0.5, 0.5, 0.2, 0.2])
    assert np.allclose(rates_from_survival(s, genome), [0.5, 0.3, 0.2])
    # predictions out of range or rising are clipped: rates stay a distribution
    assert np.allclose(rates_from_survival(np.array([1.3, 0.0, 0.6, -1.0]), genome), [0.0, 0.4, 0.6])
    assert np.allclose(rates_from_survival(np.array([0.3, 0.0, 0.7, 0.0]), genome), [0.7, 0.0, 0.3])
    assert np.allclose(rates_from_survival(np.array([0.5, 0.9, -0.2, 0.9]), genome), [0.5, 0.5, 0.0])


def test_latin_hypercube_covers_every_choice_evenly(tiny_space):
    X = latin_hypercube(tiny_space, 42, np.random.default_rng(0))
    for j in range(tiny_space.n_var):
        counts = np.bincount(X[:, j], minlength=tiny_space.xu[j] + 1)
        assert counts.max() - counts.min() <= 1 + (42 % (tiny_space.xu[j] + 1) > 0), tiny_space.gene_names[j]


class _Archive:
    def __init__(self, evaluations):
        self.evaluations = evaluations

    candidate_key_of = staticmethod(lambda ev: ev.key)
    candidate_key = staticmethod(lambda genome: genome.key)


def _fake_archive(space, settings, n, seed=0):
    """Evaluations whose accuracy grows with static MACs and whose exits take a fixed share."""
    from aebnas.cost import expected_cost, network_cost

    out = []
    for x in latin_hypercube(space, n, np.random.default_rng(seed)):
        g = space.decode(x)
        cost = network_cost(g, 3, 1, 8)
        k = len(g.active_exits)
        rates = [0.3 / max(k, 1)] * k + [1 - 0.3 * (k > 0)]
        acc = 0.5 + 0.4 * np.log(cost.static_macs) / np.log(5e5)
        macs = expected_cost(rates, cost.path_macs)
        ev = Evaluation(key=g.key, network_key=g.network_key, generation=1, val_accuracy=acc, expected_macs=macs,
                        static_macs=cost.static_macs, total_macs=cost.total_macs, params=0, n_exits=k,
                        exit_stages=[e.stage for e in g.active_exits], thresholds=list(g.thresholds),
                        path_macs=list(cost.path_macs), exit_rates=rates, exit_accuracies=[acc] * (k + 1),
                        head_accuracies=[acc] * (k + 1), static_val_accuracy=acc, train_seconds=0, eval_seconds=0)
        ev.objectives = objective_values(settings, acc, macs)
        out.append(ev)
    return out


@pytest.mark.parametrize("cost_model", ["exit_rates", "direct"])
def test_propose_returns_distinct_untrained_networks_along_the_predicted_front(tiny_space, cost_model):
    settings = SearchSettings(algorithm="msunas", predictor="rbf", cost_model=cost_model, inner_pop_size=16,
                              inner_generations=4, per_iteration=6)
    archive = _fake_archive(tiny_space, settings, 30)
    featurizer = Featurizer(tiny_space, 3, 1, 8)
    step = propose(tiny_space, _Archive(archive), settings, featurizer, seed=0, iteration=2, k=6)
    keys = [g.key for g in step.selected]
    assert len(keys) == 6 == len(set(keys))
    assert not set(keys) & {e.key for e in archive}
    F = np.array([objective_values(settings, p["val_accuracy"], p["expected_macs"]) for p in step.predicted])
    assert np.ptp(F[:, 1]) > 0  # spread over cost, not six copies of one point
    again = propose(tiny_space, _Archive(archive), settings, featurizer, seed=0, iteration=2, k=6)
    assert [g.key for g in again.selected] == keys  # a replay (resume) picks the same


def test_propose_caps_the_picks_per_backbone(tiny_space):
    """Under a MACs target the predicted front is narrow; with the cap one iteration spans several backbones."""
    settings = SearchSettings(algorithm="msunas", predictor="trees", cost_predictor="rbf", objective="macs_target",
                              target_macs=2e4, inner_pop_size=16, inner_generations=20, per_iteration=8)
    archive = _fake_archive(tiny_space, settings, 30)
    featurizer = Featurizer(tiny_space, 3, 1, 8)
    free = propose(tiny_space, _Archive(archive), replace(settings, max_per_backbone=0), featurizer, seed=0,
                   iteration=2, k=8)
    capped = propose(tiny_space, _Archive(archive), settings, featurizer, seed=0, iteration=2, k=8)
    assert settings.max_per_backbone is None  # the cap of 2 is macs_target's default
    per_backbone = Counter(g.backbone_key for g in capped.selected)
    assert len(capped.selected) == 8 and max(per_backbone.values()) <= 2 and len(per_backbone) >= 4
    # 20 inner generations converge on one backbone: uncapped, every pick is a variant of it
    assert len({g.backbone_key for g in free.selected}) == 1
    assert not {g.key for g in capped.selected} & {e.key for e in archive}
    again = propose(tiny_space, _Archive(archive), settings, featurizer, seed=0, iteration=2, k=8)
    assert [g.key for g in again.selected] == [g.key for g in capped.selected]  # a replay picks the same


@pytest.mark.parametrize("given, objective, cap", [
    (None, "macs_target", 2), (None, "avg_macs", None), (None, "avg_latency", None),
    (0, "macs_target", None), (3, "avg_macs", 3), (1, "macs_target", 1)])
def test_the_backbone_cap_follows_the_objective_unless_set(given, objective, cap):
    """null caps only macs_target's picks (where the cap paid); 0 switches the cap off; a number is kept."""
    extra = {"target_macs": 1e6} if objective == "macs_target" else {}
    settings = SearchSettings.from_dict({"algorithm": "msunas", "objective": objective, "max_per_backbone": given,
                                         **extra})
    assert settings.backbone_cap == cap


@pytest.mark.parametrize("cost_model", ["exit_rates", "direct"])
def test_cost_predictor_is_chosen_apart_from_the_accuracy_predictor(tiny_space, cost_model):
    """The accuracy and cost models are named apart; cost_predictor=null makes the cost follow search.predictor."""
    from sklearn.ensemble import ExtraTreesRegressor
    from aebnas.search.predictors import RBFRegressor

    settings = SearchSettings(algorithm="msunas", predictor="trees", cost_predictor="rbf", cost_model=cost_model)
    archive = _fake_archive(tiny_space, settings, 30)
    genomes = [tiny_space.parse(e.key) for e in archive]
    surrogate = Surrogate(settings, Featurizer(tiny_space, 3, 1, 8), seed=0)
    info = surrogate.fit(archive, genomes)
    assert (info["predictor"], info["cost_predictor"]) == ("trees", "rbf")
    assert isinstance(surrogate.error_model, ExtraTreesRegressor)
    assert all(isinstance(m, RBFRegressor) for m in surrogate.cost_models.values())
    macs = surrogate.predict(genomes)["expected_macs"]
    assert kendall_tau(np.array([e.expected_macs for e in archive]), macs) > 0.9  # the rbf fits its own rows
    same = Surrogate(SearchSettings(algorithm="msunas", predictor="trees", cost_predictor=None, cost_model=cost_model),
                     Featurizer(tiny_space, 3, 1, 8), seed=0)
    assert same.fit(archive, genomes)["cost_predictor"] == "trees"  # null: the accuracy predictor's model
    default = SearchSettings.from_dict({"algorithm": "msunas"})
    assert (default.predictor, default.cost_predictor) == ("trees", "adaptive")
    assert SearchSettings.from_dict({"algorithm": "msunas", "cost_predictor": None}).cost_predictor is None


@pytest.mark.parametrize("overrides, fragment", [
    ({"n_doe": 1}, "search.n_doe: must be in [2, inf]"),
    ({"n_doe": 400}, "search.n_doe: 400 sampled networks do not fit the budget of 360"),
    ({"n_doe": 50, "max_evaluations": 40}, "search.n_doe: 50 sampled networks do not fit the budget of 40"),
    ({"per_iteration": 0}, "search.per_iteration: must be in [1, inf]"),
    ({"max_per_backbone": -1}, "search.max_per_backbone: must be in [0, inf]"),
    ({"per_iteration": 41}, "search.per_iteration: 41 is more than the inner population"),
    ({"predictor": "xgboost"}, "search.predictor: 'xgboost' is not one of"),
    ({"cost_model": "guess"}, "search.cost_model: 'guess' is not one of"),
    ({"cost_predictor": "xgboost"}, "search.cost_predictor: 'xgboost' is not one of"),
])
def test_bad_msunas_settings_name_the_field(overrides, fragment):
    with pytest.raises(SearchConfigError) as err:
        SearchSettings.from_dict({"algorithm": "msunas", **overrides})
    assert str(err.value).startswith(fragment.split(":")[0]) and fragment in str(err.value)


def test_msunas_budget_and_sampled_networks():
    s = SearchSettings.from_dict({"algorithm": "msunas", "pop_size": 20, "generations": 17})
    assert (s.budget, s.doe_size) == (340, 100)
    small = SearchSettings.from_dict({"algorithm": "msunas", "pop_size": 4, "generations": 3})
    assert (small.budget, small.doe_size) == (12, 4)
    assert SearchSettings.from_dict({"algorithm": "msunas", "max_evaluations": 30, "n_doe": 10}).budget == 30


@pytest.mark.parametrize("overrides, algorithm", [
    ([], "msunas"), (["method=edanas"], "msunas"), (["method=nachos"], "msunas"), (["search=nsga2"], "nsga2"),
    (["method=edanas", "search=nsga2"], "nsga2"), (["method=random"], "random"), (["method=manual"], "manual"),
    (["method=static"], "nsga2"), (["search=msunas", "experiment=quickstart"], "msunas"),
    (["experiment=fashion_mnist_supernet_cpu"], "msunas"), (["experiment=methods_quickstart"], "msunas"),
    (["experiment=paper", "dataset=cifar10"], "msunas"),
])
def test_configs_compose_and_validate(overrides, algorithm):
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True)
    s = SearchSettings.from_dict(cfg["search"])
    assert s.algorithm == algorithm
    if algorithm == "msunas":
        assert s.doe_size + s.per_iteration <= s.budget  # at least one surrogate iteration


@pytest.mark.slow
def test_msunas_run_in_process(tiny_space, small_synthetic, tmp_path, monkeypatch):
    """Every output file, per-iteration predictor columns, the budget, and a failing candidate isolated."""
    import aebnas.search.training as training_module
    from aebnas.analysis import load_run
    from aebnas.search import SearchJob, run_search
    from aebnas.train import TrainerSettings

    real_fit, calls = training_module.fit, {"n": 0}

    def flaky_fit(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("injected: broken candidate")
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(training_module, "fit", flaky_fit)
    settings = SearchSettings.from_dict({"algorithm": "msunas", "pop_size": 5, "generations": 2, "n_doe": 5,
                                         "per_iteration": 2, "inner_pop_size": 10, "inner_generations": 3,
                                         "exit_metric": "max_softmax", "predictor": "trees"})
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu")
    result = run_search(SearchJob(tiny_space, small_synthetic, trainer, settings, torch.device("cpu"),
                                  tmp_path / "run", seed=0, progress=False))
    run = load_run(result.run_dir)
    assert len(run.evaluations) == 10 and run.summary["algorithm"] == "msunas" and run.summary["failed"] == 1
    for name in ("archive.sqlite", "evaluations.csv", "generations.csv", "predictions.csv", "pareto.csv",
                 "summary.json", "checkpoint.json"):
        assert (tmp_path / "run" / name).exists(), name
    g = run.generations
    assert list(g["generation"]) == [1, 2, 3, 4] and list(g["evaluations"]) == [5, 7, 9, 10]
    assert g["predictor"].isna().iloc[0] and (g["predictor"].iloc[1:] == "trees").all()
    assert g["predictor_mae"].iloc[1:3].between(0, 1).all()  # the last iteration trains one: no tau, no MAE
    assert g["predictor_mae"].isna().iloc[3]
    assert len(run.pareto) >= 1
