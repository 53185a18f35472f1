"""Training the supernet once per (dataset, space, settings), and its on-disk cache.

Sandwich rule (Yu & Huang, "Universally slimmable networks"): every step trains
the largest subnet on the labels, then the smallest and ``random_subnets``
random ones, accumulating gradients into one optimizer step. With in-place
distillation the smaller subnets learn the largest one's soft predictions of
the same batch, which is what keeps small subnets' weights useful without a
separately trained teacher.

With ``exits: joint`` every subnet of a step also runs an exit head at every exit
position (largest heads with the largest subnet, smallest with the smallest,
random ones with the random subnets), trained with the candidates' weighted
exit loss, and distilled, like the final classifier, from the largest subnet's
final prediction. With ``head_samples: K`` each subnet trains K heads per exit
position on one pass of its backbone, sharing that position's loss weight, so
each head design is trained about K times as often.

A trained supernet is stored under a key derived from everything its weights
depend on (data, backbone space, these settings, the trainer options it uses,
seed). Later searches with the same key load it in a second; change any of
them and a new one is trained beside it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from aebnas.data import DataSplits
from aebnas.nn.elastic_heads import Heads, head_choices
from aebnas.nn.supernet import Backbone, Supernet, backbone_identity, exit_identity
from aebnas.space import BranchLayer, SearchSpace
from aebnas.train.losses import exit_loss_weights, joint_exit_loss
from aebnas.train.trainer import (BatchStream, TrainerSettings, check_finite, cudnn_autotune, make_optimizer,
                                  training_layout)
from aebnas.config_checks import ConfigError, Settings, setting

log = logging.getLogger("aebnas.supernet")

CACHE_FORMAT = "aebnas-supernet/1"
EXIT_MODES = ("fresh", "joint")


def _check_exit_mode(value: Any, name: str, error: type[Exception]) -> str:
    if value not in EXIT_MODES:
        raise error(f"{name}: expected fresh or joint, got {value!r}")
    return value


def _check_head_weights(value: Any, name: str, error: type[Exception]) -> Any:
    exit_loss_weights(2, value, name)  # validates the scheme early
    return value


def _check_cache_dir(value: Any, name: str, error: type[Exception]) -> str:
    if not isinstance(value, str) or not value:
        raise error(f"{name}: expected a directory path or null, got {value!r}")
    return value


@dataclass(frozen=True)
class SupernetSettings(Settings):
    """Supernet training settings (the Hydra ``supernet`` group), used when trainer.init=supernet."""

    section: ClassVar[str] = "supernet"

    epochs: int = setting(40, lo=1, help="Supernet training epochs.")
    batch_size: int = setting(256, lo=2, help="Supernet training batch size.")
    lr: float = setting(0.1, lo=0, lo_open=True, help="Supernet learning rate.")
    weight_decay: float = setting(3e-5, lo=0, help="Supernet weight decay.")
    label_smoothing: float = setting(0.1, lo=0, hi=0.999, help="Label smoothing of the supernet's loss.")
    random_subnets: int = setting(2, lo=0, help="Sandwich rule: random subnets trained in each step besides the "
                                                "largest and the smallest.")
    distill: bool = setting(True, help="In-place distillation: smaller subnets learn the largest subnet's soft "
                                       "predictions of the same batch.")
    exits: str = setting("fresh", check=_check_exit_mode, allowed="fresh | joint",
                         help="fresh: candidates' exit heads start untrained; joint: the supernet also trains an "
                              "elastic head at every exit position and candidates inherit slices of it.")
    exit_weights: Any = setting((0.2, 1.0), check=_check_head_weights,
                                allowed="uniform | linear | a list of non-negative numbers",
                                help="Joint heads only: loss weights of the early exits and of the final classifier "
                                     "in each sandwich subnet (a list is matched from the end).")
    head_samples: int = setting(1, lo=1, help="Joint heads only: head designs each subnet of a step trains at every "
                                              "exit position, on one pass of its backbone.")
    cache_dir: str | None = setting(None, check=_check_cache_dir, allowed="a directory path or null",
                                    help="Where trained supernets are cached; null: $AEBNAS_CACHE_DIR/supernets if "
                                         "set, else ~/.cache/aebnas/supernets.")

    def check_together(self) -> None:
        if self.head_samples > 1 and self.exits != "joint":
            raise ConfigError(f"supernet.head_samples: {self.head_samples} head samples need trained heads; set "
                              "supernet.exits=joint or supernet.head_samples=1")

    @property
    def cache_root(self) -> Path:
        """Where cached supernets live: ``cache_dir``, else ``$AEBNAS_CACHE_DIR/supernets``, else the user cache."""
        if self.cache_dir:
            return Path(os.path.expanduser(self.cache_dir))
        base = os.environ.get("AEBNAS_CACHE_DIR") or os.path.join("~", ".cache", "aebnas")
        return Path(os.path.expanduser(base)) / "supernets"


@dataclass
class SupernetInfo:
    """How the supernet in hand came about: trained now (seconds, throughput) or loaded from ``path``."""

    path: str
    key: str
    cached: bool
    train_seconds: float
    steps: int
    images_per_second: float
    final_loss: float
    exits: str = "fresh"   # whether the exit heads were trained with it (joint) or candidates start them fresh


def data_fingerprint(data: DataSplits) -> dict[str, Any]:
    """What identifies the training data: shape facts plus a hash of the labels and a spread sample of images."""
    n = len(data.train)
    sample = data.train.x[:: max(1, n // 4096)].contiguous()
    digest = hashlib.sha256(data.train.y.numpy().tobytes())
    digest.update(sample.numpy().tobytes())
    return {"name": data.name, "n_train": n, "resolution": data.resolution, "in_channels": data.in_channels,
            "num_classes": data.num_classes, "hflip": data.hflip, "content": digest.hexdigest()[:16]}


def supernet_identity(data: DataSplits, space: SearchSpace, cfg: SupernetSettings, trainer: TrainerSettings,
                      seed: int) -> dict[str, Any]:
    """Everything the trained weights depend on; the cache key is its hash."""
    # the exit settings enter the key only when joint, so supernets cached before they existed stay valid
    joint = cfg.exits == "joint"
    settings = {k: v for k, v in asdict(cfg).items()
                if k not in ("cache_dir", "exit_weights", "head_samples") and (joint or k != "exits")}
    if joint:  # stored as its JSON form, so a tuple default and a YAML list of the same weights share a key
        weights = cfg.exit_weights
        settings["exit_weights"] = weights if isinstance(weights, str) else [float(w) for w in weights]
        if cfg.head_samples != 1:  # absent at 1, so joint supernets cached before the option keep their keys
            settings["head_samples"] = cfg.head_samples
    used = {k: getattr(trainer, k) for k in ("optimizer", "momentum", "nesterov", "crop_padding", "amp")}
    identity = {"format": CACHE_FORMAT, "data": data_fingerprint(data), "space": backbone_identity(space.config),
                "supernet": settings, "trainer": used, "seed": seed}
    if joint:
        identity["exit_space"] = exit_identity(space.config)
    return identity


def cache_path(identity: Mapping[str, Any], cfg: SupernetSettings, space_name: str) -> tuple[Path, str]:
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{space_name}-{identity['data']['name']}-{key}.pt"
    return cfg.cache_root / name, key


def sandwich_backbones(space: SearchSpace, rng: np.random.Generator, n_random: int) -> list[Backbone]:
    """The subnets one step trains: largest first (the teacher), smallest, then ``n_random`` random ones."""
    return [space.largest().stages, space.smallest().stages] + [space.sample(rng).stages for _ in range(n_random)]


def sample_heads(space: SearchSpace, rng: np.random.Generator, size: str,
                 types: Mapping[tuple[int, int], str] | None = None) -> Heads:
    """An exit head at every exit position for one subnet of a step: ``largest``, ``smallest`` or ``random``.

    Widths, kernels and depths have an order, layer types do not: the largest and
    smallest heads take a drawn type, so every type's weights are trained. ``types``
    (exit stage, slot index) -> type prescribes them instead of drawing.
    """
    def pick(values, extreme):
        return extreme(values) if size != "random" else values[int(rng.integers(len(values)))]

    heads: dict[int, tuple[BranchLayer, ...]] = {}
    for stage in space.config.exit_stages:
        choices = head_choices(space.config, stage)
        extreme = max if size == "largest" else min
        depth = pick(choices.depths, extreme)
        layers = []
        for j, slot in enumerate(choices.slots[:depth]):
            kind = types[stage, j] if types is not None else slot.types[int(rng.integers(len(slot.types)))]
            # pooling has no weights; the largest head sees the full feature map, the others a drawn pooling
            if size == "largest" and "none" in slot.pools:
                pool = "none"
            else:
                pool = slot.pools[int(rng.integers(len(slot.pools)))]
            layers.append(BranchLayer(kind, pick(slot.widths, extreme), pick(slot.kernels, extreme), pool))
        heads[stage] = tuple(layers)
    return heads


def sample_head_set(space: SearchSpace, rng: np.random.Generator, size: str, samples: int) -> list[Heads]:
    """``samples`` heads per exit position for one subnet; each layer slot cycles through a shuffled order of its
    types, so ``samples`` >= the number of types trains every type's weights in every step."""
    if samples == 1:  # one draw, as before head_samples existed (same random stream, same supernets)
        return [sample_heads(space, rng, size)]
    orders = {(stage, j): rng.permutation(slot.types)
              for stage in space.config.exit_stages for j, slot in enumerate(head_choices(space.config, stage).slots)}
    return [sample_heads(space, rng, size, {key: str(order[k % len(order)]) for key, order in orders.items()})
            for k in range(samples)]


def sandwich_heads(space: SearchSpace, rng: np.random.Generator, n_random: int,
                   samples: int = 1) -> list[list[Heads]]:
    """The exit head sets of one step's subnets, in ``sandwich_backbones``' order."""
    return [sample_head_set(space, rng, size, samples) for size in ["largest", "smallest"] + ["random"] * n_random]


def sandwich_step(supernet: Supernet, xb: torch.Tensor, yb: torch.Tensor, backbones: list[Backbone],
                  cfg: SupernetSettings, use_amp: bool, heads: list[list[Heads]] | None = None) -> torch.Tensor:
    """Accumulate the gradients of one sandwich step (no optimizer step); returns the largest subnet's loss.

    With ``heads`` (one list of head sets per backbone) the exit heads train too,
    weighted by ``cfg.exit_weights``; an exit position's weight is shared equally
    among a subnet's head sets, so sampling more heads does not step the backbone
    harder. The returned loss is still the final classifier's, so it reads the
    same with and without joint heads.
    """
    device_type = xb.device.type
    # every subnet has a head set at every exit position, so one weight list serves the whole step
    weights = [1.0] if heads is None else exit_loss_weights(len(heads[0][0]) + 1, cfg.exit_weights,
                                                            "supernet.exit_weights")

    def run(i: int) -> tuple[list[float], list[torch.Tensor]]:
        """The subnet's outputs (early exits of every head set, then the final classifier) and their loss weights."""
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_amp):
            if heads is None:
                return weights, [supernet(xb, backbones[i]).float()]
            early, final = supernet.forward_head_sets(xb, backbones[i], heads[i])
        return ([weights[e] / len(early) for outs in early for e in range(len(outs))] + weights[-1:],
                [out.float() for outs in early for out in outs] + [final.float()])

    teacher_weights, teacher = run(0)
    loss = F.cross_entropy(teacher[-1], yb, label_smoothing=cfg.label_smoothing)
    total = loss if heads is None else joint_exit_loss(teacher, yb, teacher_weights, cfg.label_smoothing)
    total.backward()
    soft = teacher[-1].detach().softmax(-1)
    for i in range(1, len(backbones)):
        sub_weights, outs = run(i)
        if cfg.distill:
            sub_loss = outs[0].new_zeros(())
            for w, out in zip(sub_weights, outs):
                if w:
                    sub_loss = sub_loss + w * F.kl_div(out.log_softmax(-1), soft, reduction="batchmean")
        else:
            sub_loss = joint_exit_loss(outs, yb, sub_weights, cfg.label_smoothing)
        sub_loss.backward()
    return loss.detach()


def train_supernet(supernet: Supernet, space: SearchSpace, data: DataSplits, cfg: SupernetSettings,
                   trainer: TrainerSettings, device: torch.device, seed: int = 0,
                   progress: bool = True) -> tuple[int, float]:
    """Sandwich-rule training with a cosine schedule; returns (steps, final loss of the largest subnet)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    use_amp = trainer.amp and device.type == "cuda"
    steps, loss = 0, torch.full((), float("nan"))
    # no autotuning: random subnets bring new shapes every step
    with training_layout(supernet, trainer, device) as channels_last, cudnn_autotune(False):
        stream = BatchStream(data, cfg.batch_size, trainer.crop_padding, device, seed, channels_last)
        opt, sched = make_optimizer(supernet.parameters(), trainer, cfg.lr, cfg.weight_decay,
                                    cfg.epochs * stream.steps_per_epoch)
        bar = tqdm(total=cfg.epochs * stream.steps_per_epoch, desc="supernet", unit="step", disable=not progress,
                   dynamic_ncols=True)
        for epoch in range(cfg.epochs):
            loss_sum = torch.zeros((), device=device)
            for xb, yb in stream.epoch():
                opt.zero_grad(set_to_none=True)
                backbones = sandwich_backbones(space, rng, cfg.random_subnets)
                heads = (sandwich_heads(space, rng, cfg.random_subnets, cfg.head_samples)
                         if supernet.has_exits else None)
                loss = sandwich_step(supernet, xb, yb, backbones, cfg, use_amp, heads)
                opt.step()
                sched.step()
                loss_sum += loss
                steps += 1
                bar.update(1)
            check_finite(loss_sum, steps)
            mean_loss = float(loss_sum) / max(1, stream.steps_per_epoch)
            bar.set_postfix(epoch=epoch + 1, loss=f"{mean_loss:.3f}")
            log.info("supernet epoch %d/%d: loss of the largest subnet %.4f", epoch + 1, cfg.epochs, mean_loss)
        bar.close()
    return steps, float(loss)


def _load_cached(supernet: Supernet, path: Path, identity: Mapping[str, Any]) -> SupernetInfo | None:
    """The cached weights into ``supernet`` if the file is readable and made under ``identity``; else None."""
    try:  # tensors and plain values only: nothing in a (possibly shared) cache folder gets unpickled as code
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("identity") != identity:
            log.warning("supernet cache %s belongs to other settings; training a new one", path)
            return None
        supernet.load_state_dict(stored["state_dict"])
    except Exception as exc:  # truncated, foreign, or written by other code: train again rather than stop
        log.warning("supernet cache %s is unreadable (%s: %s); training a new one", path, type(exc).__name__,
                    str(exc).splitlines()[0][:200] if str(exc) else "")
        return None
    return SupernetInfo(**{**stored["info"], "path": str(path), "cached": True})


def prepare_supernet(space: SearchSpace, data: DataSplits, cfg: SupernetSettings, trainer: TrainerSettings,
                     device: torch.device, seed: int = 0, progress: bool = True) -> tuple[Supernet, SupernetInfo]:
    """The supernet for these settings: loaded from the cache when its key matches, else trained and cached."""
    identity = supernet_identity(data, space, cfg, trainer, seed)
    path, key = cache_path(identity, cfg, space.config.name)
    torch.manual_seed(seed)  # initial weights follow the seed in the key, not what ran before
    supernet = Supernet(space.config, data.num_classes, data.in_channels, exits=cfg.exits == "joint")
    if path.exists():
        loaded = _load_cached(supernet, path, identity)
        if loaded is not None:
            log.info("supernet loaded from cache %s (trained in %.0fs)", path, loaded.train_seconds)
            return supernet.to(device), loaded
    log.info("training the supernet (%d epochs, sandwich of largest + smallest + %d random, %s exit heads); "
             "cached at %s", cfg.epochs, cfg.random_subnets, cfg.exits, path)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    steps, final_loss = train_supernet(supernet, space, data, cfg, trainer, device, seed, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    info = SupernetInfo(path=str(path), key=key, cached=False, train_seconds=round(seconds, 3), steps=steps,
                        images_per_second=round(cfg.epochs * len(data.train) / seconds, 1), final_loss=final_loss,
                        exits=cfg.exits)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # jobs of a sweep may train the same supernet at once
    torch.save({"identity": identity, "info": asdict(info),
                "state_dict": {k: v.detach().cpu() for k, v in supernet.state_dict().items()}}, tmp)
    tmp.replace(path)
    log.info("supernet trained in %.0fs (%d steps, %.0f images/s per subnet pass x%d)", seconds, steps,
             info.images_per_second, 2 + cfg.random_subnets)
    return supernet, info
