"""What a candidate IS: search-space config, genome dataclasses and the integer encoding.

Pure Python + numpy; knows nothing of torch.
"""

from aebnas.space.config import BranchChoices, SpaceConfig, SpaceConfigError, StageSpec
from aebnas.space.genome import Block, BranchLayer, Exit, Genome, GenomeError
from aebnas.space.search_space import GeneGroup, SearchSpace

__all__ = [
    "Block", "BranchChoices", "BranchLayer", "Exit", "GeneGroup", "Genome", "GenomeError",
    "SearchSpace", "SpaceConfig", "SpaceConfigError", "StageSpec",
]
