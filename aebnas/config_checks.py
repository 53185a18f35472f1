"""The settings schema: each setting's type, default, range and meaning stated once, and the checks run from it.

A settings object is a frozen dataclass whose fields are declared with :func:`setting`
(default, allowed range or choices, a one-line meaning). :func:`parse_settings` turns a
plain mapping (a Hydra group) into that object, checking every field from its declaration,
so a typo or a wrong type never passes silently. The Hydra group files only hold presets
(``aebnas.cli.config_schema`` registers each schema's defaults as the group's ``base``), and
the configuration reference (``docs/reference/configuration.md``) is generated from here.

Every error is ``ConfigError("<section>.<field>: ...")``, one line that names the field and
the fix, so the CLIs can print it as ``<prog>: error: <line>``. Torch-free and
omegaconf-free: ``aebnas.space`` builds on it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


#: A field's own check: ``check(value, "<section>.<field>", error)`` returns the value to store or raises ``error``.
FieldCheck = Callable[[Any, str, "type[Exception]"], Any]

S = TypeVar("S", bound="Settings")


def setting(default: Any = dataclasses.MISSING, *, help: str, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, choices: Sequence[Any] | None = None, check: FieldCheck | None = None,
            allowed: str | None = None) -> Any:
    """Declare one setting: its default, what values it accepts and what it means (one line).

    ``lo``/``hi`` bound a number (``lo_open`` excludes ``lo``), ``choices`` lists the accepted
    values, ``check`` replaces the type check for a field no annotation describes (a list of
    genome texts, a weighting scheme), with ``allowed`` saying in words what it accepts.
    A mutable default (list, tuple) is stored as a tuple so the object stays hashable.
    """
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "choices": tuple(choices) if choices else None,
            "check": check, "allowed": allowed}
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata=meta)


class Settings:
    """Base of every settings object: ``section`` names its Hydra group, ``error`` the exception it raises."""

    section: ClassVar[str] = ""
    error: ClassVar[type[Exception]] = ConfigError
    #: What errors put before a field's name; None: ``<section>.`` (a top-level config such as stream's: "").
    prefix: ClassVar[str | None] = None

    @classmethod
    def from_dict(cls: type[S], cfg: Mapping[str, Any]) -> S:
        """Validate every field against the schema, then the rules that tie fields together."""
        return parse_settings(cls, cfg)

    def check_together(self) -> None:
        """Rules across fields (a target an objective needs, genomes that must fit a population); none by default."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The schema's defaults as plain YAML-ready values (the Hydra group's ``base``); required fields left out."""
        out = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = f.default
            if value is dataclasses.MISSING:
                continue
            out[f.name] = value.defaults() if isinstance(value, Settings) else list(value) if isinstance(value, tuple) else value
        return out


def parse_settings(cls: type[S], cfg: Mapping[str, Any]) -> S:
    """Build ``cls`` from a mapping: unknown keys refused, missing keys defaulted, every value checked."""
    section, error = cls.section, cls.error
    prefix = f"{section}." if cls.prefix is None else cls.prefix
    cfg = to_plain(cfg, section, error)
    reject_unknown_keys(cfg, (f.name for f in dataclasses.fields(cls)), section, error)  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = prefix + f.name
        if f.name in cfg:
            values[f.name] = check_value(cfg[f.name], hints[f.name], f.metadata, name, error)
        elif f.default is dataclasses.MISSING:
            raise error(f"{name}: missing; add it to the {section} config")
    settings = cls(**values)
    settings.check_together()
    return settings


def check_value(value: Any, annotation: Any, meta: Mapping[str, Any], name: str,
                error: type[Exception] = ConfigError) -> Any:
    """One value against its field's declaration; returns the value to store (lists become tuples)."""
    annotation, optional = _strip_optional(annotation)
    if value is None and optional:
        return None
    if meta.get("check") is not None:
        return meta["check"](value, name, error)
    lo, hi, lo_open = meta.get("lo"), meta.get("hi"), meta.get("lo_open", False)
    if annotation is bool:
        value = check_bool(value, name, error)
    elif annotation is int:
        value = check_int(value, name, lo=lo, hi=hi, error=error)
    elif annotation is float:
        check_number(value, name, lo=lo, hi=hi, lo_open=lo_open, error=error)
    elif annotation is str:
        if not isinstance(value, str):
            raise error(f"{name}: expected text, got {value!r}")
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise error(f"{name}: '{value}' is not one of {list(choices)}")
    return value


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``int | None`` -> (int, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), True
    return annotation, False


def to_plain(cfg: Any, section: str, error: type[Exception] = ConfigError) -> dict[str, Any]:
    """A plain dict from a mapping or an OmegaConf ``DictConfig`` (converted without importing omegaconf here)."""
    if hasattr(cfg, "_metadata") and hasattr(cfg, "_get_node"):  # an OmegaConf container
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise error(f"{section}: expected a mapping of settings, got {type(cfg).__name__}")
    return dict(cfg)


def type_name(annotation: Any, meta: Mapping[str, Any] | None = None) -> str:
    """How the configuration reference writes a field's type (YAML terms: a tuple is a list)."""
    annotation, optional = _strip_optional(annotation)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        text = " or ".join(type_name(a) for a in args)
    elif origin is tuple:
        text = f"list of {type_name(args[0])}"
    elif annotation is Any:
        text = "any"
    elif isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        text = "mapping"
    else:
        text = getattr(annotation, "__name__", str(annotation))
    return f"{text} or null" if optional else text


def allowed_text(meta: Mapping[str, Any]) -> str:
    """How the configuration reference writes what a field accepts."""
    if meta.get("allowed"):
        return str(meta["allowed"])
    if meta.get("choices"):
        return " | ".join(str(c) for c in meta["choices"])
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    left = "(" if meta.get("lo_open") else "["
    return f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"


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
