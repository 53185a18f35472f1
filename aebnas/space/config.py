"""The fixed macro-structure of a search space and the choices its genes pick from.

Everything that is *not* searched (stage widths, strides, stem, head) lives here,
next to the lists of choices that *are* searched. Both come from
``conf/space/*.yaml`` so a user changes the space without touching code. The
object is frozen and hashable because it travels inside every genome: a saved
genome then carries all it needs to rebuild its network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from aebnas.space.layer_kinds import layer_kind_names
from aebnas.validation import ConfigError, check_bool, check_int, reject_unknown_keys

LAYER_TYPES = ("conv", "dwsep", "ir")  # the default branch choices; any registered layer kind may be chosen
POOL_TYPES = ("none", "max", "avg")
ACTIVATIONS = ("relu", "hswish")


class SpaceConfigError(ConfigError):
    """A search-space setting is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class StageSpec:
    width: int
    stride: int


@dataclass(frozen=True)
class BranchChoices:
    depths: tuple[int, ...] = (1, 2)
    layer_types: tuple[str, ...] = LAYER_TYPES
    widths: tuple[int, ...] = (16, 32, 64)
    kernels: tuple[int, ...] = (3, 5)
    pools: tuple[str, ...] = POOL_TYPES
    ir_expansion: int = 3


@dataclass(frozen=True)
class SpaceConfig:
    name: str
    stem_channels: int
    stages: tuple[StageSpec, ...]
    depths: tuple[int, ...]
    kernels: tuple[int, ...]
    expansions: tuple[int, ...]
    exit_stages: tuple[int, ...]
    thresholds: tuple[float, ...]
    branch: BranchChoices = field(default_factory=BranchChoices)
    stem_stride: int = 1
    squeeze_excite: bool = False
    activation: str = "hswish"
    final_head_channels: int = 0
    # One fixed exit head (layers text, e.g. "conv32k1+avg-conv32k1") per exit stage; empty = heads are searched.
    # A fixed head has no branch genes: only its threshold gene (off / on at a threshold) is searched.
    exit_heads: tuple[str, ...] = ()

    @property
    def n_stages(self) -> int:
        return len(self.stages)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def max_branch_depth(self) -> int:
        return max(self.branch.depths)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        for key in ("depths", "kernels", "expansions", "exit_stages", "thresholds"):
            d[key] = list(d[key])
        d["branch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["branch"].items()}
        d["exit_heads"] = list(self.exit_heads)
        return d

    def fixed_head(self, stage: int) -> str | None:
        """The fixed exit head after ``stage``, or None when that exit's head is searched."""
        if not self.exit_heads:
            return None
        return self.exit_heads[self.exit_stages.index(stage)]

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SpaceConfig":
        """Build and validate from a plain mapping (a Hydra ``space`` group)."""
        cfg = _to_plain(cfg)
        reject_unknown_keys(cfg, cls.__dataclass_fields__, "space", SpaceConfigError)
        for key in ("name", "stem_channels", "stages", "depths", "kernels", "expansions", "exit_stages", "thresholds"):
            if key not in cfg or cfg[key] is None:
                raise SpaceConfigError(f"space.{key}: missing; add it to the space config")
        stages = []
        for i, s in enumerate(cfg["stages"]):
            if not isinstance(s, Mapping) or "width" not in s or "stride" not in s:
                raise SpaceConfigError(f"space.stages[{i}]: needs 'width' and 'stride', e.g. {{width: 24, stride: 1}}")
            stages.append(StageSpec(_pos_int(s["width"], f"space.stages[{i}].width"),
                                    _pos_int(s["stride"], f"space.stages[{i}].stride")))
        branch_cfg = dict(cfg.get("branch") or {})
        reject_unknown_keys(branch_cfg, BranchChoices.__dataclass_fields__, "space.branch", SpaceConfigError)
        branch = BranchChoices(
            depths=_int_choices(branch_cfg.get("depths", (1, 2)), "space.branch.depths"),
            layer_types=_str_choices(branch_cfg.get("layer_types", LAYER_TYPES), "space.branch.layer_types",
                                     layer_kind_names()),
            widths=_int_choices(branch_cfg.get("widths", (16, 32, 64)), "space.branch.widths"),
            kernels=_odd_choices(branch_cfg.get("kernels", (3, 5)), "space.branch.kernels"),
            pools=_str_choices(branch_cfg.get("pools", POOL_TYPES), "space.branch.pools", POOL_TYPES),
            ir_expansion=_pos_int(branch_cfg.get("ir_expansion", 3), "space.branch.ir_expansion"),
        )
        try:
            thresholds = tuple(sorted(float(t) for t in _seq(cfg["thresholds"], "space.thresholds")))
        except (TypeError, ValueError):
            raise SpaceConfigError(f"space.thresholds: expected a list of numbers in (0, 1], got {cfg['thresholds']!r}") from None
        for t in thresholds:
            if not 0.0 < t <= 1.0:
                raise SpaceConfigError(f"space.thresholds: choice {t} is outside (0, 1]; "
                                       "'off' is implicit (gene 0), list only confidences in (0, 1]")
        if len(set(thresholds)) != len(thresholds):
            raise SpaceConfigError("space.thresholds: choices must be distinct")
        exit_stages = _int_choices(cfg["exit_stages"], "space.exit_stages", allow_empty=True)
        for s in exit_stages:
            if not 1 <= s < len(stages):
                raise SpaceConfigError(f"space.exit_stages: stage {s} must be in 1..{len(stages) - 1} "
                                       "(the last stage always ends in the final classifier)")
        activation = str(cfg.get("activation", "hswish"))
        if activation not in ACTIVATIONS:
            raise SpaceConfigError(f"space.activation: '{activation}' is not one of {list(ACTIVATIONS)}")
        if not stages:
            raise SpaceConfigError("space.stages: at least one stage is needed")
        exit_heads = _exit_heads(cfg.get("exit_heads"), tuple(sorted(exit_stages)), tuple(stages),
                                 _pos_int(cfg.get("stem_stride", 1), "space.stem_stride"))
        return cls(
            name=str(cfg["name"]),
            stem_channels=_pos_int(cfg["stem_channels"], "space.stem_channels"),
            stem_stride=_pos_int(cfg.get("stem_stride", 1), "space.stem_stride"),
            stages=tuple(stages),
            depths=_int_choices(cfg["depths"], "space.depths"),
            kernels=_odd_choices(cfg["kernels"], "space.kernels"),
            expansions=_int_choices(cfg["expansions"], "space.expansions"),
            exit_stages=tuple(sorted(exit_stages)),
            thresholds=thresholds,
            branch=branch,
            squeeze_excite=check_bool(cfg.get("squeeze_excite", False), "space.squeeze_excite", SpaceConfigError),
            activation=activation,
            final_head_channels=check_int(cfg.get("final_head_channels", 0) or 0, "space.final_head_channels", lo=0,
                                          error=SpaceConfigError),
            exit_heads=exit_heads,
        )


def growing_exit_heads(exit_stages: Sequence[int], stages: Sequence[StageSpec], stem_stride: int = 1) -> tuple[str, ...]:
    """NACHOS-style exit classifiers, designed from the backbone so that deeper exits cost more.

    Each head is a stack of 3x3 depthwise-separable layers as wide as its stage,
    the first one after a 2x2 average pooling. Deeper feature maps are smaller,
    so the head after a deeper stage gets as many layers as it takes for its
    estimated MACs (feature area relative to the input, from the strides, times
    per-pixel cost) to exceed the previous head's.
    """
    heads, previous = [], 0.0
    for s in exit_stages:
        scale = stem_stride
        for spec in stages[:s]:
            scale *= spec.stride
        w = stages[s - 1].width
        per_layer = (9 * w + w * w) / (4 * scale * scale)  # MACs per input pixel of one layer after the pooling
        n = 1
        while n * per_layer <= previous:
            n += 1
        previous = n * per_layer
        heads.append("+".join([f"avg-dwsep{w}k3"] + [f"dwsep{w}k3"] * (n - 1)))
    return tuple(heads)


def _exit_heads(value: Any, exit_stages: tuple[int, ...], stages: tuple[StageSpec, ...],
                stem_stride: int) -> tuple[str, ...]:
    """null (searched heads), 'growing', one head text for every exit, or a list with one per exit stage."""
    if value in (None, "", []):
        return ()
    if value == "growing":
        return growing_exit_heads(exit_stages, stages, stem_stride)
    heads = (value,) * len(exit_stages) if isinstance(value, str) else tuple(str(v) for v in _seq(value, "space.exit_heads"))
    if len(heads) != len(exit_stages):
        raise SpaceConfigError(f"space.exit_heads: {len(heads)} heads for {len(exit_stages)} exit stages; give one "
                               "per entry of space.exit_stages, a single head for all, 'growing', or null")
    from aebnas.space.genome import GenomeError, parse_layers  # the layer grammar lives with the genome text

    for stage, text in zip(exit_stages, heads):
        try:
            layers = parse_layers(text, stage)
        except GenomeError as exc:
            raise SpaceConfigError(f"space.exit_heads: {exc}") from None
        for layer in layers:
            if layer.type not in layer_kind_names() or layer.width < 1 or layer.kernel % 2 == 0:
                raise SpaceConfigError(f"space.exit_heads: layer {layer.to_text()!r} after stage {stage} needs a type "
                                       f"in {list(layer_kind_names())}, a positive width and an odd kernel")
    return heads


def _to_plain(cfg: Any) -> dict[str, Any]:
    try:  # accept OmegaConf objects without importing omegaconf in this torch-free layer
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    return dict(cfg)


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpaceConfigError(f"{name}: expected a list, got {value!r}")
    return value


def _pos_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpaceConfigError(f"{name}: expected a positive integer, got {value!r}")
    return value


def _int_choices(value: Any, name: str, allow_empty: bool = False) -> tuple[int, ...]:
    """Distinct positive integers, sorted: gene index order is then size order (largest() relies on it)."""
    items = tuple(sorted(_pos_int(v, name) for v in _seq(value, name)))
    if not items and not allow_empty:
        raise SpaceConfigError(f"{name}: needs at least one choice")
    if len(set(items)) != len(items):
        raise SpaceConfigError(f"{name}: choices must be distinct, got {list(items)}")
    return items


def _odd_choices(value: Any, name: str) -> tuple[int, ...]:
    items = _int_choices(value, name)
    for k in items:
        if k % 2 == 0:
            raise SpaceConfigError(f"{name}: kernel {k} must be odd so 'same' padding keeps the resolution")
    return items


def _str_choices(value: Any, name: str, allowed: Sequence[str]) -> tuple[str, ...]:
    items = tuple(str(v) for v in _seq(value, name))
    if not items:
        raise SpaceConfigError(f"{name}: needs at least one choice")
    for v in items:
        if v not in allowed:
            raise SpaceConfigError(f"{name}: '{v}' is not one of {list(allowed)}")
    return items
