"""Why inherited exit heads of the searched space trail a fixed head: weight sharing or design?

    python experiments/bench_exit_heads.py --out heads.json [--backbones 12] [--epochs 3]
        [--fixed-head conv16k1+avg-conv16k1] [--cache-dir DIR] [hydra overrides ...]

The same random backbones, with an exit at every exit position, get two kinds of
exit heads: the space's searched heads (a random head per position and backbone)
sliced from a supernet trained with joint searched heads, and one fixed head
(EDANAS's by default) from a supernet trained with that head (``space.exit_heads``),
the supernet an ``method=edanas`` search of the same settings uses. Every network
is scored as a search scores it: inherited weights, BatchNorm recalibration, one
val pass (``trainer.epochs=0``); and again after ``--epochs`` of fine-tuning from
the same weights (``supernet.head_samples`` applies to the searched heads' supernet;
the fixed head's trains with 1). Reported per exit position and head kind: mean val accuracy of
the exit heads, inherited and fine-tuned, with the final classifier as the
control (the backbones come from two supernets). Searched heads that trail when
inherited but close the gap when fine-tuned were undertrained by the supernet,
whose training they split among many head designs; a gap that stays is the design.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench_common import evaluate_genomes, load_setup, machine, sample_genomes, write_json

from aebnas.cli.common import user_errors
from aebnas.nn.elastic_heads import Heads
from aebnas.space import Exit, Genome, SearchSpace, SpaceSettings
from aebnas.space.genome import parse_layers
from aebnas.train.supernet import prepare_supernet, sample_heads
from aebnas.config_checks import ConfigError

DEFAULT_OVERRIDES = ("experiment=fashion_mnist_supernet_cpu",)


def with_heads(space: SearchSpace, backbone: Genome, heads: Heads, threshold: float) -> Genome:
    """``backbone``'s stages with an exit after every exit stage, ``heads`` (stage -> layers) at them; parsed
    back from its text, so a head the space does not allow fails here."""
    exits = tuple(Exit(stage, threshold, heads[stage]) for stage in space.config.exit_stages)
    return space.parse(replace(backbone, exits=exits).to_text())


def with_random_heads(space: SearchSpace, backbones: list[Genome], rng: np.random.Generator,
                      threshold: float) -> list[Genome]:
    """Each backbone with a random searched head at every exit stage, drawn from the distribution the
    supernet's random subnets draw theirs from (``sample_heads``), so the heads scored are those it trains."""
    return [with_heads(space, backbone, sample_heads(space, rng, "random"), threshold) for backbone in backbones]


def mean_by_position(rows: list[dict], n_exits: int) -> list[float | None]:
    """Mean val accuracy of each exit (early ones, then the final classifier) over the networks scored."""
    ok = [r["head_accuracies"] for r in rows if r["status"] == "ok" and len(r["head_accuracies"]) == n_exits + 1]
    return [float(np.mean([h[i] for h in ok])) if ok else None for i in range(n_exits + 1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--backbones", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of the second scoring")
    p.add_argument("--fixed-head", default="conv16k1+avg-conv16k1", help="the fixed head (genome layer text)")
    p.add_argument("--cache-dir", default=None, help="supernet cache (reused when the settings match)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if args.backbones < 1 or args.epochs < 1:
        raise ConfigError("--backbones and --epochs: expected at least 1 each")
    overrides = (args.overrides or list(DEFAULT_OVERRIDES)) + ([f"supernet.cache_dir={args.cache_dir}"]
                                                               if args.cache_dir else [])
    setup = load_setup(overrides)
    if setup.trainer.init != "supernet" or setup.supernet.exits != "joint":
        raise ConfigError("trainer.init / supernet.exits: this benchmark compares supernet heads; pass "
                          "trainer.init=supernet supernet.exits=joint")
    if setup.space.config.exit_heads:
        raise ConfigError("space.exit_heads: the overrides must leave the heads searched; the fixed head is "
                          "--fixed-head")
    fixed_space = SearchSpace(SpaceSettings.from_dict({**setup.config["space"], "exit_heads": args.fixed_head}))
    # one fixed design per position: more head samples would train the same head again (supernet.head_samples)
    kinds = {"searched": setup, "fixed": replace(setup, space=fixed_space, supernet=replace(setup.supernet,
                                                                                           head_samples=1))}
    threshold = max(setup.space.config.thresholds)
    n_exits = len(setup.space.config.exit_stages)
    rng = np.random.default_rng(setup.seed)
    fixed_heads = {stage: parse_layers(args.fixed_head, stage) for stage in setup.space.config.exit_stages}
    backbones = sample_genomes(setup.space, args.backbones, setup.seed)
    genomes = {"searched": with_random_heads(setup.space, backbones, rng, threshold),
               "fixed": [with_heads(fixed_space, b, fixed_heads, threshold) for b in backbones]}
    result: dict = {"machine": machine(), "overrides": setup.overrides, "backbones": args.backbones,
                    "finetune_epochs": args.epochs, "fixed_head": args.fixed_head,
                    "train_images": len(setup.data.train),
                    "val_images": len(setup.data.val), "exit_stages": list(setup.space.config.exit_stages),
                    "supernets": {}, "rows": {}, "mean_head_accuracy": {}}
    out = Path(args.out)
    for kind, s in kinds.items():
        supernet, info = prepare_supernet(s.space, s.data, s.supernet, s.trainer, s.device, s.seed, progress=False)
        result["supernets"][kind] = {"path": info.path, "cached": info.cached, "train_seconds": info.train_seconds}
        for epochs in (0, args.epochs):
            label = f"{kind}, {epochs} epochs"
            start = time.perf_counter()
            rows = evaluate_genomes(s, genomes[kind], replace(s.trainer, epochs=epochs), supernet, label=label)
            result["rows"][label] = rows
            result["mean_head_accuracy"][label] = mean_by_position(rows, n_exits)
            result.setdefault("seconds", {})[label] = time.perf_counter() - start
            write_json(out, result)
    gaps = {}
    for epochs in (0, args.epochs):
        a, b = (result["mean_head_accuracy"][f"{k}, {epochs} epochs"] for k in ("searched", "fixed"))
        gaps[f"{epochs} epochs"] = [None if x is None or y is None else x - y for x, y in zip(a, b)]
    result["searched_minus_fixed"] = gaps
    write_json(out, result)
    for label, accs in result["mean_head_accuracy"].items():
        print(f"{label:>22}: " + "  ".join("-" if a is None else f"{a:.4f}" for a in accs))
    for label, gap in gaps.items():
        print(f"{'gap, ' + label:>22}: " + "  ".join("-" if g is None else f"{g:+.4f}" for g in gap))


if __name__ == "__main__":
    with user_errors("bench_exit_heads.py"):  # a bad override or missing data: one line, no traceback
        main()
