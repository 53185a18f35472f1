"""Reading run directories: load_run -> pandas, Pareto utilities, plots. No torch import here."""

from aebnas.analysis.pareto import hypervolume_2d, non_dominated_mask
from aebnas.analysis.run import Run, load_run

__all__ = ["Run", "hypervolume_2d", "load_run", "non_dominated_mask"]
