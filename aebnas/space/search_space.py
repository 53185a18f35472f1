"""Integer encoding of genomes for pymoo, plus sampling, repair and the size of the space.

pymoo evolves fixed-length integer vectors; each gene indexes into one list of
choices from the space config. The vector keeps "hidden" genes (kernels of
blocks beyond the stage depth, layers of a disabled exit) so that a later
mutation can switch them back on with varied values; identity of candidates is
decided by the canonical genome text, in which hidden genes do not appear.

Layout, stage by stage then exit by exit::

    stage s : depth, (kernel, expansion) * max_depth
    exit  j : threshold (0 = off), branch depth, (type, width, kernel, pool) * max_branch_depth
              (threshold alone when the space fixes the exit's head, see ``SpaceSettings.exit_heads``)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aebnas.space.config import SpaceSettings
from aebnas.space.genome import Block, BranchLayer, Exit, Genome, GenomeError, parse_layers


@dataclass(frozen=True)
class GeneGroup:
    """A contiguous run of genes that together describe one stage or one exit."""

    name: str
    start: int
    stop: int


class SearchSpace:
    def __init__(self, config: SpaceSettings):
        self.config = config
        c = config
        names: list[str] = []
        upper: list[int] = []
        groups: list[GeneGroup] = []
        for s in range(c.n_stages):
            start = len(names)
            names.append(f"s{s + 1}.depth")
            upper.append(len(c.depths) - 1)
            for b in range(c.max_depth):
                names += [f"s{s + 1}.b{b + 1}.kernel", f"s{s + 1}.b{b + 1}.expansion"]
                upper += [len(c.kernels) - 1, len(c.expansions) - 1]
            groups.append(GeneGroup(f"stage{s + 1}", start, len(names)))
        br = c.branch
        for stage in c.exit_stages:
            start = len(names)
            if c.fixed_head(stage) is not None:
                names.append(f"x{stage}.threshold")
                upper.append(len(c.thresholds))
                groups.append(GeneGroup(f"exit{stage}", start, len(names)))
                continue
            names += [f"x{stage}.threshold", f"x{stage}.depth"]
            upper += [len(c.thresholds), len(br.depths) - 1]  # threshold gene 0 means "off"
            for layer in range(c.max_branch_depth):
                p = f"x{stage}.l{layer + 1}"
                names += [f"{p}.type", f"{p}.width", f"{p}.kernel", f"{p}.pool"]
                upper += [len(br.layer_types) - 1, len(br.widths) - 1, len(br.kernels) - 1, len(br.pools) - 1]
            groups.append(GeneGroup(f"exit{stage}", start, len(names)))
        self.gene_names: tuple[str, ...] = tuple(names)
        self.groups: tuple[GeneGroup, ...] = tuple(groups)
        self.xl = np.zeros(len(names), dtype=np.int64)
        self.xu = np.asarray(upper, dtype=np.int64)

    @property
    def n_var(self) -> int:
        return len(self.gene_names)

    # ---- vector <-> genome -------------------------------------------------
    def decode(self, x: np.ndarray) -> Genome:
        x = np.asarray(x)
        if x.shape != (self.n_var,):
            raise GenomeError(f"genome vector: expected {self.n_var} genes, got shape {x.shape}")
        if np.any(x < self.xl) or np.any(x > self.xu):
            bad = int(np.flatnonzero((x < self.xl) | (x > self.xu))[0])
            raise GenomeError(f"genome vector: gene {self.gene_names[bad]}={int(x[bad])} outside 0..{int(self.xu[bad])}")
        c, br = self.config, self.config.branch
        i = 0
        stages = []
        for _ in range(c.n_stages):
            depth = c.depths[int(x[i])]
            blocks = [Block(c.kernels[int(x[i + 1 + 2 * b])], c.expansions[int(x[i + 2 + 2 * b])]) for b in range(depth)]
            stages.append(tuple(blocks))
            i += 1 + 2 * c.max_depth
        exits = []
        for stage in c.exit_stages:
            t = int(x[i])
            fixed = c.fixed_head(stage)
            if fixed is not None:
                exits.append(Exit(stage=stage, threshold=None) if t == 0 else
                             Exit(stage=stage, threshold=c.thresholds[t - 1], layers=parse_layers(fixed, stage)))
                i += 1
                continue
            if t == 0:
                exits.append(Exit(stage=stage, threshold=None))
            else:
                depth = br.depths[int(x[i + 1])]
                layers = []
                for layer in range(depth):
                    j = i + 2 + 4 * layer
                    layers.append(BranchLayer(br.layer_types[int(x[j])], br.widths[int(x[j + 1])],
                                              br.kernels[int(x[j + 2])], br.pools[int(x[j + 3])]))
                exits.append(Exit(stage=stage, threshold=c.thresholds[t - 1], layers=tuple(layers)))
            i += 2 + 4 * c.max_branch_depth
        return Genome(space=c, stages=tuple(stages), exits=tuple(exits))

    def encode(self, genome: Genome) -> np.ndarray:
        """Canonical vector: hidden genes are 0, so equal networks give equal vectors."""
        c, br = self.config, self.config.branch
        if genome.space != c:
            raise GenomeError("genome: it belongs to another search space (space config differs)")
        x: list[int] = []
        for blocks in genome.stages:
            x.append(_index(c.depths, len(blocks), "stage depth"))
            for b in range(c.max_depth):
                if b < len(blocks):
                    x += [_index(c.kernels, blocks[b].kernel, "kernel"), _index(c.expansions, blocks[b].expansion, "expansion")]
                else:
                    x += [0, 0]
        for e in genome.exits:
            if c.fixed_head(e.stage) is not None:
                x.append(1 + _index(c.thresholds, e.threshold, "threshold") if e.active else 0)
                continue
            if not e.active:
                x += [0] * (2 + 4 * c.max_branch_depth)
                continue
            x += [1 + _index(c.thresholds, e.threshold, "threshold"), _index(br.depths, len(e.layers), "branch depth")]
            for layer in range(c.max_branch_depth):
                if layer < len(e.layers):
                    lay = e.layers[layer]
                    x += [_index(br.layer_types, lay.type, "layer type"), _index(br.widths, lay.width, "layer width"),
                          _index(br.kernels, lay.kernel, "layer kernel"), _index(br.pools, lay.pool, "layer pool")]
                else:
                    x += [0, 0, 0, 0]
        return np.asarray(x, dtype=np.int64)

    def canonical(self, x: np.ndarray) -> np.ndarray:
        return self.encode(self.decode(x))

    def key(self, x: np.ndarray) -> str:
        return self.decode(x).to_text()

    def parse(self, text: str) -> Genome:
        return Genome.from_text(text, self.config)

    # ---- sampling and repair -----------------------------------------------
    def sample_x(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` raw vectors with every gene (hidden ones too) uniform over its choices."""
        return rng.integers(self.xl, self.xu + 1, size=(n, self.n_var), dtype=np.int64)

    def sample(self, rng: np.random.Generator) -> Genome:
        return self.decode(self.sample_x(rng, 1)[0])

    def repair(self, X: np.ndarray) -> np.ndarray:
        """Round and clip any real-valued or out-of-range vectors onto valid genes."""
        X = np.rint(np.asarray(X, dtype=float)).astype(np.int64)
        return np.clip(X, self.xl, self.xu)

    # ---- reference points ----------------------------------------------------
    def largest(self, with_exits: bool = False) -> Genome:
        """Deepest, widest, largest-kernel backbone; exits off unless asked (the static reference)."""
        x = self.xu.copy()
        if not with_exits:
            for g in self.groups:
                if g.name.startswith("exit"):
                    x[g.start] = 0
        return self.decode(x)

    def smallest(self) -> Genome:
        return self.decode(self.xl.copy())

    @property
    def size(self) -> int:
        """Number of distinct networks (canonical genomes), thresholds included."""
        c, br = self.config, self.config.branch
        per_block = len(c.kernels) * len(c.expansions)
        stage = sum(per_block ** d for d in c.depths)
        per_layer = len(br.layer_types) * len(br.widths) * len(br.kernels) * len(br.pools)
        searched_head = 1 + len(c.thresholds) * sum(per_layer ** d for d in br.depths)
        exits = 1
        for s in c.exit_stages:
            exits *= 1 + len(c.thresholds) if c.fixed_head(s) is not None else searched_head
        return stage ** c.n_stages * exits


def _index(choices: tuple, value, what: str) -> int:
    try:
        return choices.index(value)
    except ValueError:
        raise GenomeError(f"genome: {what} {value!r} is not one of the space's choices {list(choices)}") from None
