"""pymoo operators that respect the genome's categorical genes.

Genes are indices into unordered choice lists (kernel 3/5/7 is not a number
line), so SBX or polynomial mutation make no sense here. Crossover swaps whole
gene groups (a stage, or an exit with its threshold and branch) between
parents, keeping co-adapted genes together; mutation redraws a gene uniformly
among its other choices. Randomness comes only from pymoo's ``random_state``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling

from aebnas.space import Genome, SearchSpace


class SpaceSampling(Sampling):
    """Uniform random genomes, after any user-given seed genomes (a known network to improve on)."""

    def __init__(self, space: SearchSpace, initial: Sequence[Genome] = ()):
        super().__init__()
        self.space = space
        self.initial = [space.encode(g) for g in initial]

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        X = self.space.sample_x(random_state, n_samples)
        for i, x in enumerate(self.initial[:n_samples]):
            X[i] = x
        return X


class GroupUniformCrossover(Crossover):
    """Two parents -> two children; each stage/exit group comes from either parent with p=0.5."""

    def __init__(self, space: SearchSpace, prob: float = 0.9):
        super().__init__(2, 2, prob=prob)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        _, n_matings, _ = X.shape
        children = np.copy(X)
        for g in self.space.groups:
            swap = random_state.random(n_matings) < 0.5
            children[0, swap, g.start:g.stop] = X[1, swap, g.start:g.stop]
            children[1, swap, g.start:g.stop] = X[0, swap, g.start:g.stop]
        return children


class GeneResetMutation(Mutation):
    """Each gene, with probability ``gene_prob`` (pymoo's per-variable probability; 1 / number of genes when
    not given), takes one of its *other* choices uniformly."""

    def __init__(self, space: SearchSpace, gene_prob: float | None = None):
        super().__init__(prob=1.0, prob_var=gene_prob)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.array(X, dtype=np.int64, copy=True)
        n_choices = self.space.xu - self.space.xl + 1
        mutate = (random_state.random(X.shape) < self.get_prob_var(problem)) & (n_choices > 1)
        # shift by 1..n-1 modulo n: uniform over the other choices
        shift = 1 + np.floor(random_state.random(X.shape) * (n_choices - 1)).astype(np.int64)
        X[mutate] = ((X - self.space.xl + shift) % n_choices + self.space.xl)[mutate]
        return X


class SpaceRepair(Repair):
    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, X, **kwargs):
        return self.space.repair(X)


class GenomeDuplicateElimination(DuplicateElimination):
    """Two vectors are duplicates when they are the same candidate (same canonical key).

    ``key`` maps a genome to its identity: the genome text by default, or the
    evaluator's ``candidate_key`` so offspring are told apart exactly as the
    evaluator tells candidates apart (network alone under threshold tuning).
    """

    def __init__(self, space: SearchSpace, key: Callable[[Genome], str] | None = None):
        super().__init__()
        self.space = space
        self.key = key or (lambda genome: genome.key)

    def _key(self, x) -> str:
        return self.key(self.space.decode(x))

    def _do(self, pop, other, is_duplicate):
        seen = set()
        if other is not None:
            seen.update(self._key(ind.X) for ind in other)
        for i, ind in enumerate(pop):
            key = self._key(ind.X)
            if key in seen:
                is_duplicate[i] = True
            else:
                seen.add(key)
        return is_duplicate
