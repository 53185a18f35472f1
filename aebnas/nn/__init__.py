"""Genome -> torch modules: blocks, exit branches and the EarlyExitNet."""

from aebnas.nn.fold import fold_batchnorm
from aebnas.nn.network import EarlyExitNet, build_model, count_parameters

__all__ = ["EarlyExitNet", "build_model", "count_parameters", "fold_batchnorm"]
