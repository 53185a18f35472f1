"""Surrogate-assisted search (MSuNAS / NSGANetV2): train a few networks per iteration, predict the rest.

The loop: ``n_doe`` networks drawn by Latin hypercube sampling over the
integer genes are trained first; then, each iteration, predictors of every
objective that needs training (validation error; expected cost, through the
exit rates) are fitted on the archive, an inner NSGA-II searches the predicted
objectives (``inner_pop_size`` x ``inner_generations``, thousands of networks
for free), ``per_iteration`` untrained networks spread along its predicted
front are trained, and the archive grows, until ``budget`` candidates are
evaluated. Candidates go through the same evaluator entry point as NSGA-II's
(``CandidateEvaluator.evaluate_all``), so the archive, resume by replay,
parallel workers, failure isolation and latency objectives work unchanged:
fitting and the inner search depend only on the seed and on archived values,
so a resumed run replays the same selections.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.core.problem import Problem
from pymoo.optimize import minimize
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting
from scipy.stats import qmc
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from aebnas.cost import network_cost
from aebnas.cost.latency import LatencyTable
from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.objectives import constraint_values, n_constraints, objective_values
from aebnas.search.operators import GeneResetMutation, GenomeDuplicateElimination, GroupUniformCrossover, SpaceRepair
from aebnas.search.predictors import kendall_tau, make_predictor
from aebnas.search.selection import spread_subset
from aebnas.search.settings import SearchSettings
from aebnas.space import Genome, SearchSpace

log = logging.getLogger("aebnas.search")

# generations.csv columns the surrogate adds (empty on the sampling row, generation 1)
SURROGATE_COLUMNS = ("predictor", "predictor_cv_tau", "predictor_tau", "predictor_mae", "cost_predictor",
                     "cost_predictor_cv_tau", "cost_predictor_tau", "cost_predictor_mae", "fit_seconds",
                     "inner_seconds")


def _seed(*parts: int) -> int:
    """A seed for one step of the loop, derived from the search's seed (stable across runs and resumes)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2 ** 31 - 1))


def latin_hypercube(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` gene vectors in which every choice of every gene appears about equally often (scipy's LHS,
    each gene's unit interval cut into its choices), so the first networks cover the space evenly."""
    u = qmc.LatinHypercube(d=space.n_var, seed=rng).random(n)
    n_choices = space.xu - space.xl + 1
    return space.xl + np.minimum(np.floor(u * n_choices).astype(np.int64), n_choices - 1)


def doe_genomes(space: SearchSpace, n: int, rng: np.random.Generator, key: Callable[[Genome], str],
                initial: Sequence[Genome] = ()) -> list[Genome]:
    """The sampled first networks: ``initial`` first, then Latin hypercube draws; repeats redrawn uniformly."""
    out, seen = [], set()
    for genome in [*initial, *(space.decode(x) for x in latin_hypercube(space, n, rng))]:
        while key(genome) in seen:
            genome = space.sample(rng)
        seen.add(key(genome))
        out.append(genome)
        if len(out) == n:
            break
    return out


@dataclass
class Featurizer:
    """Predictor inputs of a genome: its canonical gene vector, log static MACs, the log MACs of the path to each
    exit slot (0 when off) and the number of exits; with the analytic path costs that turn exit rates into
    expected cost. Cached by genome key: the inner search asks about the same genomes again and again."""

    space: SearchSpace
    num_classes: int
    in_channels: int
    resolution: int
    latency_table: LatencyTable | None = None
    _cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __call__(self, genome: Genome) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        hit = self._cache.get(genome.key)
        if hit is None:
            cost = network_cost(genome, self.num_classes, self.in_channels, self.resolution)
            slots = np.zeros(len(genome.exits))
            active = [i for i, e in enumerate(genome.exits) if e.active]
            slots[active] = np.log1p(np.asarray(cost.path_macs[:-1], dtype=float))
            x = np.concatenate([self.space.encode(genome).astype(float),
                                [np.log1p(cost.static_macs), len(active)], slots])
            path_ms = np.asarray(self.latency_table.path_ms(genome), dtype=float) if self.latency_table else np.zeros(0)
            hit = self._cache[genome.key] = (x, np.asarray(cost.path_macs, dtype=float), path_ms)
        return hit

    def matrix(self, genomes: Sequence[Genome]) -> np.ndarray:
        return np.array([self(g)[0] for g in genomes])


def survival(ev: Evaluation, n_slots: int, stages: Sequence[int]) -> np.ndarray:
    """Share of inputs still running after each exit slot (1 before any exit; the last one reaches the end)."""
    left, out, rates = 1.0, [], dict(zip(ev.exit_stages, ev.exit_rates))
    for stage in stages[:n_slots]:
        left -= rates.get(stage, 0.0)
        out.append(left)
    return np.clip(np.array(out), 0.0, 1.0)


def rates_from_survival(s: np.ndarray, genome: Genome) -> np.ndarray:
    """Exit rates of ``genome``'s active exits and its final classifier from predicted survival per slot: clipped
    to [0, 1], flat across inactive slots, never rising; the rates sum to 1."""
    left, prev, rates = 1.0, 1.0, []
    for value, e in zip(s, genome.exits):
        if e.active:
            left = min(prev, max(0.0, min(1.0, float(value))))
            rates.append(prev - left)
            prev = left
    rates.append(prev)
    return np.array(rates)


class Surrogate:
    """Predictors of validation accuracy and expected cost (MACs, and latency with a table), fitted on the
    archive's successful rows; failed candidates are no measurement of their network."""

    def __init__(self, settings: SearchSettings, featurizer: Featurizer, seed: int):
        self.settings, self.featurizer, self.seed = settings, featurizer, seed
        self.stages = [e.stage for e in featurizer.space.decode(featurizer.space.xl).exits]
        self.info: dict[str, Any] = {}

    def fit(self, evaluations: Sequence[Evaluation], genomes: Sequence[Genome]) -> dict[str, Any]:
        X = self.featurizer.matrix(genomes)
        error = np.array([1.0 - e.val_accuracy for e in evaluations])
        self.error_model = make_predictor(self.settings.predictor, self.seed).fit(X, error)
        info = {"predictor": getattr(self.error_model, "chosen_", self.settings.predictor),
                "predictor_cv_tau": _best(getattr(self.error_model, "cv_scores_", None))}
        self.cost_models: dict[str, Any] = {}
        cost_name = self.settings.cost_predictor or self.settings.predictor
        if self.settings.cost_model == "exit_rates":
            if self.stages:
                S = np.array([survival(e, len(self.stages), self.stages) for e in evaluations])
                truth = np.array([getattr(e, self.settings.cost_column) for e in evaluations])
                column = self.settings.cost_column

                def score(_y, s_pred):  # rank on the expected cost the exit rates imply, not on the rates
                    return kendall_tau(truth, self._costs(genomes, s_pred)[column])

                self.cost_models["survival"] = make_predictor(cost_name, self.seed, score=score).fit(
                    X, S[:, 0] if S.shape[1] == 1 else S)
        else:
            columns = ["expected_macs"] + (["expected_latency_ms"] if self.featurizer.latency_table else [])
            for column in columns:
                y = np.log(np.maximum([getattr(e, column) for e in evaluations], 1e-12))
                self.cost_models[column] = make_predictor(cost_name, self.seed).fit(X, y)
        main = self.cost_models.get("survival", self.cost_models.get(self.settings.cost_column))
        info.update({"cost_predictor": getattr(main, "chosen_", cost_name if main else "analytic"),
                     "cost_predictor_cv_tau": _best(getattr(main, "cv_scores_", None))})
        self.info = info
        return info

    def predict(self, genomes: Sequence[Genome]) -> dict[str, np.ndarray]:
        """Predicted val_accuracy, expected_macs and expected_latency_ms (NaN without a table) per genome."""
        X = self.featurizer.matrix(genomes)
        out = {"val_accuracy": 1.0 - np.clip(self.error_model.predict(X), 0.0, 1.0)}
        if self.settings.cost_model == "exit_rates":
            s = self.cost_models["survival"].predict(X) if self.stages else np.zeros((len(genomes), 0))
            out.update(self._costs(genomes, s))
        else:
            out["expected_macs"] = np.exp(self.cost_models["expected_macs"].predict(X))
            out["expected_latency_ms"] = (np.exp(self.cost_models["expected_latency_ms"].predict(X))
                                          if "expected_latency_ms" in self.cost_models else np.full(len(X), np.nan))
        return out

    def _costs(self, genomes: Sequence[Genome], s: np.ndarray) -> dict[str, np.ndarray]:
        s = np.asarray(s, dtype=float).reshape(len(genomes), -1)
        macs, ms = [], []
        for genome, row in zip(genomes, s):
            _, path_macs, path_ms = self.featurizer(genome)
            rates = rates_from_survival(row, genome)
            macs.append(float(rates @ path_macs))
            ms.append(float(rates @ path_ms) if len(path_ms) else np.nan)
        return {"expected_macs": np.array(macs), "expected_latency_ms": np.array(ms)}


def _best(scores: dict[str, float] | None) -> float | None:
    return None if not scores else round(max(scores.values()), 4)


class PredictedProblem(Problem):
    """The search's objectives and constraints, as the surrogate predicts them; remembers every genome it
    scored, so the selection can choose from all of the inner search's networks, not only its last population."""

    def __init__(self, space: SearchSpace, surrogate: Surrogate, settings: SearchSettings):
        super().__init__(n_var=space.n_var, n_obj=2, n_ieq_constr=n_constraints(settings), xl=space.xl, xu=space.xu,
                         vtype=int)
        self.space, self.surrogate, self.settings = space, surrogate, settings
        self.seen: dict[str, tuple[Genome, np.ndarray, float, dict[str, float]]] = {}

    def _evaluate(self, X, out, *args, **kwargs):
        genomes = [self.space.decode(np.asarray(x, dtype=np.int64)) for x in X]
        p = self.surrogate.predict(genomes)
        F, G = [], []
        for i, genome in enumerate(genomes):
            acc, macs, ms = p["val_accuracy"][i], p["expected_macs"][i], p["expected_latency_ms"][i]
            F.append(objective_values(self.settings, acc, macs, ms))
            G.append(constraint_values(self.settings, macs, ms))
            cv = float(sum(max(g, 0.0) for g in G[-1]))
            self.seen.setdefault(genome.key, (genome, np.array(F[-1]), cv,
                                              {"val_accuracy": acc, "expected_macs": macs, "expected_latency_ms": ms}))
        out["F"] = np.array(F, dtype=float)
        if self.n_ieq_constr:
            out["G"] = np.array(G, dtype=float)


def true_objectives(evaluations: Sequence[Evaluation]) -> tuple[np.ndarray, np.ndarray]:
    F = np.array([e.objectives for e in evaluations], dtype=float).reshape(len(evaluations), -1)
    cv = np.array([sum(max(g, 0.0) for g in e.constraints) for e in evaluations], dtype=float)
    return F, cv


@dataclass
class Step:
    """One iteration's record: what the predictors chose and how well they predicted the networks it trained."""

    selected: list[Genome]
    predicted: list[dict[str, float]]
    info: dict[str, Any]


def propose(space: SearchSpace, evaluator: CandidateEvaluator, settings: SearchSettings, featurizer: Featurizer,
            seed: int, iteration: int, k: int) -> Step:
    """Fit the predictors on the archive, search them with NSGA-II and pick ``k`` untrained networks.

    Linear algebra runs on one thread: the models are small, and a BLAS pool spinning on a busy machine made
    one fit ten times slower in measurements; it also keeps fits bit-identical across resumes.
    """
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # lbfgs stopping at max_iter is the intended budget
        return _propose(space, evaluator, settings, featurizer, seed, iteration, k)


def _propose(space: SearchSpace, evaluator: CandidateEvaluator, settings: SearchSettings, featurizer: Featurizer,
             seed: int, iteration: int, k: int) -> Step:
    done = [e for e in evaluator.evaluations if e.status == "ok"]
    genomes = [space.parse(e.key) for e in done]
    start = time.perf_counter()
    surrogate = Surrogate(settings, featurizer, _seed(seed, iteration, 1))
    info = surrogate.fit(done, genomes)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    problem = PredictedProblem(space, surrogate, settings)
    F, cv = true_objectives(done)
    ranked = [i for front in NonDominatedSorting().do(F + 1e6 * cv[:, None]) for i in front] if len(done) else []
    n_archive = min(len(ranked), settings.inner_pop_size // 2)  # the archive's best seed the inner population
    rng = np.random.default_rng(_seed(seed, iteration, 2))
    X0 = np.vstack([np.array([space.encode(genomes[i]) for i in ranked[:n_archive]]).reshape(-1, space.n_var),
                    latin_hypercube(space, settings.inner_pop_size - n_archive, rng)])
    algorithm = NSGA2(pop_size=settings.inner_pop_size, sampling=X0,
                      crossover=GroupUniformCrossover(space, prob=settings.crossover_prob),
                      mutation=GeneResetMutation(space, settings.gene_mutation_prob), repair=SpaceRepair(space),
                      eliminate_duplicates=GenomeDuplicateElimination(space, key=evaluator.candidate_key))
    minimize(problem, algorithm, ("n_gen", settings.inner_generations), seed=_seed(seed, iteration, 3),
             verbose=False, copy_algorithm=False)

    evaluated = {evaluator.candidate_key_of(e) for e in evaluator.evaluations}
    pool: dict[str, tuple[Genome, np.ndarray, float, dict[str, float]]] = {}
    for genome, f, c, pred in problem.seen.values():
        key = evaluator.candidate_key(genome)
        if key not in evaluated and key not in pool:
            pool[key] = (genome, f, c, pred)
    entries = list(pool.values())
    covered = _trained_front(done)
    picks = spread_subset(np.array([e[1] for e in entries]).reshape(len(entries), 2), k, covered,
                          np.array([e[2] for e in entries]), groups=[e[0].backbone_key for e in entries],
                          cap=settings.backbone_cap) if entries else []
    selected = [entries[i][0] for i in picks]
    predicted = [entries[i][3] for i in picks]
    keys = {evaluator.candidate_key(g) for g in selected}
    while len(selected) < k:  # the inner search found too few new networks: fill with random ones
        genome = space.sample(rng)
        key = evaluator.candidate_key(genome)
        if key not in evaluated and key not in keys:
            keys.add(key)
            selected.append(genome)
            p = surrogate.predict([genome])
            predicted.append({name: float(v[0]) for name, v in p.items()})
    info.update({"fit_seconds": round(fit_seconds, 3), "inner_seconds": round(time.perf_counter() - start, 3),
                 "inner_networks": len(problem.seen)})
    return Step(selected, predicted, info)


def _trained_front(done: Sequence[Evaluation]) -> np.ndarray:
    """Objective vectors of the feasible trained networks that no other dominates (the front so far)."""
    F, cv = true_objectives(done)
    F = F[cv <= 0]
    if not len(F):
        return np.zeros((0, 2))
    return F[NonDominatedSorting().do(F, only_non_dominated_front=True)]


def out_of_sample(step: Step, evaluations: Sequence[Evaluation], cost_column: str) -> dict[str, Any]:
    """Kendall tau and mean absolute error of the predictions for the networks just trained (out of sample)."""
    pairs = [(p, e) for p, e in zip(step.predicted, evaluations) if e.status == "ok"]
    if len(pairs) < 2:
        return {"predictor_tau": None, "predictor_mae": None, "cost_predictor_tau": None, "cost_predictor_mae": None}
    acc = np.array([[p["val_accuracy"], e.val_accuracy] for p, e in pairs])
    cost = np.array([[p[cost_column], getattr(e, cost_column)] for p, e in pairs], dtype=float)
    return {"predictor_tau": round(kendall_tau(acc[:, 1], acc[:, 0]), 4),
            "predictor_mae": round(float(np.mean(np.abs(acc[:, 0] - acc[:, 1]))), 5),
            "cost_predictor_tau": round(kendall_tau(cost[:, 1], cost[:, 0]), 4),
            # relative: MACs and milliseconds alike
            "cost_predictor_mae": round(float(np.mean(np.abs(cost[:, 0] - cost[:, 1]) / np.abs(cost[:, 1]))), 5)}


class MSuNAS(Algorithm):
    """The surrogate loop as a pymoo algorithm: the sampled networks are its first generation, each iteration's
    chosen ones the next, so pymoo's evaluator scores them through the search's problem (the same evaluation
    backend as NSGA-II) and the per-generation callback logs each iteration.

    ``generation_columns`` holds the predictor columns of the last iteration's generations.csv row and
    ``prediction_rows`` each network it trained with its predicted and measured objectives (predictions.csv).
    """

    def __init__(self, space: SearchSpace, settings: SearchSettings, candidate_key: Callable[[Genome], str],
                 initial: Sequence[Genome] = (), **kwargs):
        super().__init__(**kwargs)
        self.space, self.settings, self.candidate_key, self.initial = space, settings, candidate_key, list(initial)
        self.seed_: int = 0
        self.step: Step | None = None
        self.generation_columns: dict[str, Any] = {}
        self.prediction_rows: list[dict[str, Any]] = []

    @property
    def iterations(self) -> int:
        """Generations in all: the sampling, then enough iterations of per_iteration to spend the budget."""
        s = self.settings
        return 1 + -(-(s.budget - s.doe_size) // s.per_iteration)

    def _setup(self, problem, seed=None, **kwargs):
        self.seed_ = 0 if seed is None else int(seed)
        evaluator = problem.evaluator
        data = evaluator.data
        self.featurizer = Featurizer(self.space, data.num_classes, data.in_channels, data.resolution,
                                     evaluator.latency_table)

    def _population(self, genomes: Sequence[Genome]) -> Population:
        return Population.new(X=np.array([self.space.encode(g) for g in genomes]).reshape(-1, self.space.n_var))

    def _initialize_infill(self):
        rng = np.random.default_rng(_seed(self.seed_, 0))
        self.generation_columns = {c: None for c in SURROGATE_COLUMNS}
        return self._population(doe_genomes(self.space, self.settings.doe_size, rng, self.candidate_key,
                                            self.initial))

    def _initialize_advance(self, infills=None, **kwargs):
        self.prediction_rows = []

    def _infill(self):
        evaluator = self.problem.evaluator
        k = min(self.settings.per_iteration, self.settings.budget - len(evaluator.evaluations))
        self.step = propose(self.space, evaluator, self.settings, self.featurizer, self.seed_, self.n_iter + 1, k)
        return self._population(self.step.selected)

    def _advance(self, infills=None, **kwargs):
        evaluator, step, column = self.problem.evaluator, self.step, self.settings.cost_column
        self.pop = Population.merge(self.pop, infills)
        by_key = {evaluator.candidate_key_of(e): e for e in evaluator.evaluations}
        evaluations = [by_key[self.candidate_key(g)] for g in step.selected]
        quality = out_of_sample(step, evaluations, column)
        self.generation_columns = {**{c: step.info.get(c) for c in SURROGATE_COLUMNS}, **quality}
        self.prediction_rows = [{"generation": self.n_iter + 1, "key": e.key, "status": e.status,
                                 "predicted_val_accuracy": p["val_accuracy"], "val_accuracy": e.val_accuracy,
                                 f"predicted_{column}": p[column], column: getattr(e, column),
                                 "predictor": step.info["predictor"], "cost_predictor": step.info["cost_predictor"]}
                                for p, e in zip(step.predicted, evaluations)]
        log.debug("msunas iteration %d: %s", self.n_iter + 1, json.dumps(step.info, default=float))
