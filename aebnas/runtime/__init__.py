"""After the search: adaptive (batch-compacting) inference, operating points, export, stream benchmark."""

from aebnas.runtime.adaptive import AdaptiveModel, AdaptiveOutput, SavedModel, load_saved_model, reference_exits
from aebnas.runtime.operating_points import (OperatingPoint, OperatingPointError, OperatingPoints,
                                             compute_operating_points)

__all__ = ["AdaptiveModel", "AdaptiveOutput", "OperatingPoint", "OperatingPointError", "OperatingPoints",
           "SavedModel", "compute_operating_points", "load_saved_model", "reference_exits"]
