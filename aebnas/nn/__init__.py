"""Genome -> torch modules: blocks, exit branches and the EarlyExitNet."""

from aebnas.nn.network import EarlyExitNet, build_model, count_parameters

__all__ = ["EarlyExitNet", "build_model", "count_parameters"]
