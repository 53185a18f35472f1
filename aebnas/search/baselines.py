"""What the baseline methods need beyond the space and settings: random proposals and the hand-designed network.

The methods themselves are configs (``conf/method/*.yaml``): they restrict the
space and the settings. Two of them change how candidates are proposed, and
that part lives here so NSGA-II's loop, archive, resume and run directory serve
every method alike.
"""

from __future__ import annotations

import numpy as np
from pymoo.core.mutation import Mutation

from aebnas.space import Genome, SearchSpace


class UniformResampling(Mutation):
    """Random search inside NSGA-II's loop: every offspring is a fresh uniform genome.

    With crossover off, this turns each generation into ``pop_size`` new random
    candidates (duplicates of earlier ones are redrawn by pymoo's duplicate
    elimination), so random search gets exactly NSGA-II's evaluation budget and
    the same archive, resume and per-generation records.
    """

    def __init__(self, space: SearchSpace):
        super().__init__(prob=1.0)
        self.space = space

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        return self.space.sample_x(random_state, len(X))


def manual_genomes(space: SearchSpace) -> list[Genome]:
    """The hand-designed baseline: one network, one candidate per global threshold.

    Every backbone and branch gene takes its middle choice (lower middle for an
    even count), every exit is on, and all exits share one threshold; the
    candidates are that network at each of ``space.thresholds``. They share one
    training run (thresholds do not change weights).
    """
    x = (space.xl + space.xu) // 2
    threshold_genes = [g.start for g in space.groups if g.name.startswith("exit")]
    if not threshold_genes:
        return [space.decode(x)]
    genomes = []
    for t in range(1, len(space.config.thresholds) + 1):
        y = x.copy()
        y[threshold_genes] = t
        genomes.append(space.decode(np.asarray(y, dtype=np.int64)))
    return genomes
