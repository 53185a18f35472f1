"""Config checks shared by every settings object: a typo or a wrong type must not pass silently.

Each helper raises ``ConfigError("<section>.<field>: ...")`` so the CLI can print
one line that names the field and the fix.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def reject_unknown_keys(cfg: Mapping[str, Any], known: Iterable[str], section: str,
                        error: type[Exception] = ConfigError) -> None:
    """Raise ``error("<section>.<key>: unknown key; valid keys are [...]")`` for the first stray key."""
    known = sorted(known)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise error(f"{section}.{unknown[0]}: unknown key; valid keys are {known}")


def check_bool(value: Any, field: str, error: type[Exception] = ConfigError) -> bool:
    """Only true/false: a string such as 'no' would otherwise read as True."""
    if not isinstance(value, bool):
        raise error(f"{field}: expected true or false, got {value!r}")
    return value


def check_int(value: Any, field: str, lo: int | None = None, hi: int | None = None,
              error: type[Exception] = ConfigError) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{field}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{field}: must be in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}], got {value}")
    return value


def check_number(value: Any, field: str, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, error: type[Exception] = ConfigError) -> float:
    """A finite real in [lo, hi] (or (lo, hi] with ``lo_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{field}: expected a number, got {value!r}")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        raise error(f"{field}: must be in {left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}], got {value}")
    return float(value)
