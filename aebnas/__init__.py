"""aebnas: hardware-aware evolutionary NAS for early-exit neural networks."""

__version__ = "0.1.0"
