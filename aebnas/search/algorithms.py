"""Which algorithm proposes the candidates: the place where a search algorithm is plugged in by name.

Each ``search.algorithm`` names a builder here that returns a pymoo algorithm
(and how long to run it). Whatever the algorithm, candidates are scored by the
same evaluation backend through ``EarlyExitProblem``, and the run directory's
archive, resume, per-generation log and the finish serve it alike. A new
algorithm (a surrogate-assisted loop, say) is a pymoo ``Algorithm`` subclass,
registered here with ``@register_algorithm("name")`` and named in
``SearchSettings``' ``ALGORITHMS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.algorithm import Algorithm

from aebnas.search.baselines import UniformResampling, manual_genomes
from aebnas.search.operators import (GeneResetMutation, GenomeDuplicateElimination, GroupUniformCrossover,
                                     SpaceRepair, SpaceSampling)
from aebnas.search.settings import SearchSettings
from aebnas.space import Genome, GenomeError, SearchSpace

CandidateKey = Callable[[Genome], str]


@dataclass
class AlgorithmPlan:
    """A ready algorithm, when it stops (a pymoo termination), how many candidates it asks for at a time
    (what a training pool can overlap) and in all (the progress bar's length)."""

    algorithm: Algorithm
    termination: tuple[str, int]
    batch_size: int
    candidates: int


AlgorithmBuilder = Callable[[SearchSpace, SearchSettings, CandidateKey], AlgorithmPlan]
ALGORITHM_BUILDERS: dict[str, AlgorithmBuilder] = {}


def register_algorithm(name: str) -> Callable[[AlgorithmBuilder], AlgorithmBuilder]:
    """Make ``search.algorithm=<name>`` build its algorithm with the decorated function."""
    def register(builder: AlgorithmBuilder) -> AlgorithmBuilder:
        ALGORITHM_BUILDERS[name] = builder
        return builder
    return register


def build_algorithm(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey) -> AlgorithmPlan:
    """The algorithm ``settings.algorithm`` names; ``candidate_key`` tells duplicates apart as the evaluator does."""
    builder = ALGORITHM_BUILDERS.get(settings.algorithm)
    if builder is None:
        raise ValueError(f"search.algorithm: '{settings.algorithm}' has no builder; "
                         f"one of {sorted(ALGORITHM_BUILDERS)}")
    return builder(space, settings, candidate_key)


def parse_initial_genomes(space: SearchSpace, settings: SearchSettings) -> list[Genome]:
    """Seed genomes from the config, each checked against the space's choices (thresholds included)."""
    genomes = []
    for i, text in enumerate(settings.initial_genomes):
        try:
            genome = space.parse(text)
            space.encode(genome)  # thresholds must be among space.thresholds to live in the gene vector
        except GenomeError as exc:
            raise GenomeError(f"search.initial_genomes[{i}]: {exc}") from None
        genomes.append(genome)
    return genomes


def _nsga2(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey, initial: list[Genome],
           pop_size: int, generations: int, random: bool = False) -> AlgorithmPlan:
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=SpaceSampling(space, initial),
        crossover=GroupUniformCrossover(space, prob=0.0 if random else settings.crossover_prob),
        mutation=UniformResampling(space) if random else GeneResetMutation(space, settings.gene_mutation_prob),
        repair=SpaceRepair(space),
        eliminate_duplicates=GenomeDuplicateElimination(space, key=candidate_key),
    )
    return AlgorithmPlan(algorithm, ("n_gen", generations), pop_size, pop_size * generations)


@register_algorithm("nsga2")
def nsga2(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey) -> AlgorithmPlan:
    """NSGA-II with the space's operators, seeded with ``search.initial_genomes``."""
    return _nsga2(space, settings, candidate_key, parse_initial_genomes(space, settings), settings.pop_size,
                  settings.generations)


@register_algorithm("random")
def random_search(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey) -> AlgorithmPlan:
    """Uniform genomes inside NSGA-II's loop: the same budget, archive and records (see ``UniformResampling``)."""
    return _nsga2(space, settings, candidate_key, parse_initial_genomes(space, settings), settings.pop_size,
                  settings.generations, random=True)


@register_algorithm("manual")
def manual(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey) -> AlgorithmPlan:
    """The hand-designed network at each global threshold, all in one generation."""
    parse_initial_genomes(space, settings)  # checked as for any algorithm, though the manual network replaces them
    initial = manual_genomes(space)
    return _nsga2(space, settings, candidate_key, initial, len(initial), 1)


@register_algorithm("msunas")
def msunas(space: SearchSpace, settings: SearchSettings, candidate_key: CandidateKey) -> AlgorithmPlan:
    """The surrogate-assisted loop (aebnas.search.msunas): sampled networks, then a few per iteration picked by
    predictors, until ``settings.budget`` candidates are evaluated."""
    from aebnas.search.msunas import MSuNAS  # its predictors import scikit-learn: only when asked for

    algorithm = MSuNAS(space, settings, candidate_key, parse_initial_genomes(space, settings))
    return AlgorithmPlan(algorithm, ("n_gen", algorithm.iterations), settings.per_iteration, settings.budget)
