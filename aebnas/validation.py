"""Config checks shared by every settings object: a typo in a key must not pass silently."""

from __future__ import annotations

from typing import Any, Iterable, Mapping


def reject_unknown_keys(cfg: Mapping[str, Any], known: Iterable[str], section: str,
                        error: type[Exception] = ValueError) -> None:
    """Raise ``error("<section>.<key>: unknown key; valid keys are [...]")`` for the first stray key."""
    known = sorted(known)
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise error(f"{section}.{unknown[0]}: unknown key; valid keys are {known}")
