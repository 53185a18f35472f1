"""After the search: adaptive (batch-compacting) inference, operating points, export, stream benchmark."""

from aebnas.runtime.adaptive import AdaptiveModel, AdaptiveOutput, SavedModel, load_saved_model, reference_exits
from aebnas.runtime.operating_points import (GridOutcomes, OperatingPoint, OperatingPointError, OperatingPoints,
                                             compute_operating_points, grid_outcomes)

__all__ = ["AdaptiveModel", "AdaptiveOutput", "GridOutcomes", "OperatingPoint", "OperatingPointError",
           "OperatingPoints", "SavedModel", "compute_operating_points", "grid_outcomes", "load_saved_model",
           "reference_exits"]
