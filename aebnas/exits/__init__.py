"""The exit rule: how confident an exit is, where a sample leaves, what a threshold vector gives and which one to
pick. The search simulates it on cached logits and the runtime applies it, so it sits below both.

``thresholds`` works on numpy arrays; ``torch_confidence`` computes the same metrics in torch ops.
"""

from aebnas.exits.thresholds import (METRICS, ExitOutcome, confidence, exit_indices, simulate_exits, softmax,
                                     tune_thresholds)
from aebnas.exits.torch_confidence import confidence_torch

__all__ = ["METRICS", "ExitOutcome", "confidence", "confidence_torch", "exit_indices", "simulate_exits", "softmax",
           "tune_thresholds"]
