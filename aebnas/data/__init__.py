"""Dataset registry for aebnas: load any supported dataset as uint8 tensor splits.

``load_dataset(cfg)`` returns :class:`DataSplits` (train/val/test as uint8 NCHW
tensors plus class count, channels, resolution and train-set mean/std). Batches are
normalised and augmented on the training device with :func:`normalize` and
:func:`augment_batch`. All user-fixable problems raise :class:`DatasetError`.
"""

from .augment import augment_batch, normalize
from .errors import DatasetError
from .registry import available_datasets, load_dataset
from .splits import ArraySplit, DataSplits

__all__ = [
    "ArraySplit",
    "DataSplits",
    "DatasetError",
    "augment_batch",
    "available_datasets",
    "load_dataset",
    "normalize",
]
