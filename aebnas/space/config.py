"""The fixed macro-structure of a search space and the choices its genes pick from.

Everything that is *not* searched (stage widths, strides, stem, head) lives here,
next to the lists of choices that *are* searched. Both come from
``conf/space/*.yaml`` so a user changes the space without touching code. The
object is frozen and hashable because it travels inside every genome: a saved
genome then carries all it needs to rebuild its network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Mapping, Sequence

from aebnas.config_checks import ConfigError, Settings, check_int, parse_settings, setting

LAYER_TYPES = ("conv", "dwsep", "ir")
POOL_TYPES = ("none", "max", "avg")
ACTIVATIONS = ("relu", "hswish")


class SpaceConfigError(ConfigError):
    """A search-space setting is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class StageSpec:
    width: int
    stride: int


@dataclass(frozen=True)
class BranchChoices(Settings):
    """What a searched exit branch picks from (``space.branch``)."""

    section: ClassVar[str] = "space.branch"
    error: ClassVar[type[Exception]] = SpaceConfigError

    depths: tuple[int, ...] = setting((1, 2), check=lambda v, n, e: _int_choices(v, n),
                                      allowed="distinct positive integers", help="Layers an exit branch may have.")
    layer_types: tuple[str, ...] = setting(LAYER_TYPES, check=lambda v, n, e: _str_choices(v, n, LAYER_TYPES),
                                           allowed="some of " + " | ".join(LAYER_TYPES),
                                           help="Layer types of a branch: conv, dwsep (depthwise-separable), ir "
                                                "(inverted residual).")
    widths: tuple[int, ...] = setting((16, 32, 64), check=lambda v, n, e: _int_choices(v, n),
                                      allowed="distinct positive integers", help="Channel widths of a branch layer.")
    kernels: tuple[int, ...] = setting((3, 5), check=lambda v, n, e: _odd_choices(v, n),
                                       allowed="distinct odd positive integers", help="Kernel sizes of a branch layer.")
    pools: tuple[str, ...] = setting(POOL_TYPES, check=lambda v, n, e: _str_choices(v, n, POOL_TYPES),
                                     allowed="some of " + " | ".join(POOL_TYPES),
                                     help="Pooling before a branch layer.")
    ir_expansion: int = setting(3, check=lambda v, n, e: _pos_int(v, n), allowed="a positive integer",
                                help="Expansion of a branch's inverted-residual layers.")


def _check_stages(value: Any, name: str, error: type[Exception]) -> tuple[StageSpec, ...]:
    stages = []
    for i, s in enumerate(_seq(value, name)):
        if not isinstance(s, Mapping) or "width" not in s or "stride" not in s:
            raise SpaceConfigError(f"{name}[{i}]: needs 'width' and 'stride', e.g. {{width: 24, stride: 1}}")
        stages.append(StageSpec(_pos_int(s["width"], f"{name}[{i}].width"), _pos_int(s["stride"], f"{name}[{i}].stride")))
    if not stages:
        raise SpaceConfigError(f"{name}: at least one stage is needed")
    return tuple(stages)


def _check_thresholds(value: Any, name: str, error: type[Exception]) -> tuple[float, ...]:
    try:
        thresholds = tuple(sorted(float(t) for t in _seq(value, name)))
    except (TypeError, ValueError):
        raise SpaceConfigError(f"{name}: expected a list of numbers in (0, 1], got {value!r}") from None
    for t in thresholds:
        if not 0.0 < t <= 1.0:
            raise SpaceConfigError(f"{name}: choice {t} is outside (0, 1]; "
                                   "'off' is implicit (gene 0), list only confidences in (0, 1]")
    if len(set(thresholds)) != len(thresholds):
        raise SpaceConfigError(f"{name}: choices must be distinct")
    return thresholds


def _check_branch(value: Any, name: str, error: type[Exception]) -> "BranchChoices":
    return BranchChoices.from_dict(value or {})


def _check_exit_heads(value: Any, name: str, error: type[Exception]) -> Any:
    """Kept as given here; ``SpaceSettings.from_dict`` expands it once the stages are known."""
    if value in (None, "", []):
        return ()
    return value if isinstance(value, str) else tuple(str(v) for v in _seq(value, name))


_POSITIVE = "a positive integer"
_CHOICES = "distinct positive integers"


@dataclass(frozen=True)
class SpaceSettings(Settings):
    """The fixed macro-structure of a space and the choices its genes pick from (the Hydra ``space`` group)."""

    section: ClassVar[str] = "space"
    error: ClassVar[type[Exception]] = SpaceConfigError

    name: str = setting(check=lambda v, n, e: str(v), allowed="text", help="The space's name (in run and "
                                                                             "supernet cache names).")
    stem_channels: int = setting(check=lambda v, n, e: _pos_int(v, n), allowed=_POSITIVE,
                                 help="Channels of the stem convolution.")
    stages: tuple[StageSpec, ...] = setting(check=_check_stages, allowed="a list of {width, stride}",
                                            help="Backbone stages, each with its width and stride.")
    depths: tuple[int, ...] = setting(check=lambda v, n, e: _int_choices(v, n), allowed=_CHOICES,
                                      help="Blocks a stage may have (searched per stage).")
    kernels: tuple[int, ...] = setting(check=lambda v, n, e: _odd_choices(v, n),
                                       allowed="distinct odd positive integers",
                                       help="Kernel sizes of a stage's blocks (searched per stage).")
    expansions: tuple[int, ...] = setting(check=lambda v, n, e: _int_choices(v, n), allowed=_CHOICES,
                                          help="Inverted-residual expansions of a stage's blocks (searched per stage).")
    exit_stages: tuple[int, ...] = setting(check=lambda v, n, e: _int_choices(v, n, allow_empty=True),
                                           allowed="distinct stages in 1..len(stages)-1, or []",
                                           help="Stages after which an exit may be placed.")
    thresholds: tuple[float, ...] = setting(check=_check_thresholds, allowed="distinct numbers in (0, 1]",
                                            help="Confidence thresholds an exit's gene picks from ('off' is gene 0).")
    branch: BranchChoices = setting(BranchChoices(), check=_check_branch, allowed="see space.branch",
                                    help="What a searched exit branch picks from.")
    stem_stride: int = setting(1, check=lambda v, n, e: _pos_int(v, n), allowed=_POSITIVE,
                               help="Stride of the stem convolution.")
    squeeze_excite: bool = setting(False, help="Squeeze-and-excitation in the backbone's blocks.")
    activation: str = setting("hswish", choices=ACTIVATIONS, help="Activation of the backbone.")
    final_head_channels: int = setting(0, check=lambda v, n, e: check_int(v or 0, n, lo=0, error=e),
                                       allowed="an integer >= 0 (null = 0)",
                                       help="Channels of a 1x1 convolution before the final classifier (0 = none).")
    exit_heads: tuple[str, ...] = setting((), check=_check_exit_heads,
                                          allowed="null | growing | one head text | one per exit stage",
                                          help="Fixed exit heads (layers text, e.g. conv32k1+avg-conv32k1): only their "
                                               "thresholds are searched; null = heads are searched.")

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
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SpaceSettings":
        """Build and validate from a plain mapping (a Hydra ``space`` group); fixed heads are expanded per exit."""
        s = parse_settings(cls, cfg)
        return replace(s, exit_heads=_exit_heads(s.exit_heads, s.exit_stages, s.stages, s.stem_stride))

    def check_together(self) -> None:
        for s in self.exit_stages:
            if not 1 <= s < len(self.stages):
                raise SpaceConfigError(f"space.exit_stages: stage {s} must be in 1..{len(self.stages) - 1} "
                                       "(the last stage always ends in the final classifier)")


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
    if value in (None, "", [], ()):
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
            if layer.type not in LAYER_TYPES or layer.width < 1 or layer.kernel % 2 == 0:
                raise SpaceConfigError(f"space.exit_heads: layer {layer.to_text()!r} after stage {stage} needs a type "
                                       f"in {list(LAYER_TYPES)}, a positive width and an odd kernel")
    return heads


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
