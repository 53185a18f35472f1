"""Pick the torch device once, from config: ``auto`` means CUDA when present."""

from __future__ import annotations

import torch

from aebnas.config_checks import ConfigError


def resolve_device(name: str | None = "auto") -> torch.device:
    """The device to train on; asking for CUDA where there is none is refused, not silently ignored."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"trainer.device: '{name}' is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: '{name}' asked for but CUDA is not available; use trainer.device=auto or cpu")
    return device
