"""What a candidate IS: search-space config, genome dataclasses and the integer encoding.

Pure Python + numpy; knows nothing of torch.
"""

from aebnas.space.config import BranchChoices, SpaceSettings, SpaceConfigError, StageSpec
from aebnas.space.genome import Block, BranchLayer, Exit, Genome, GenomeError
from aebnas.space.search_space import GeneGroup, SearchSpace

__all__ = [
    "Block", "BranchChoices", "BranchLayer", "Exit", "GeneGroup", "Genome", "GenomeError",
    "SearchSpace", "SpaceSettings", "SpaceConfigError", "StageSpec",
]
