"""What folding BatchNorm buys, and what the exported adaptive model costs and answers.

    python experiments/bench_export.py --out export.json run=<run dir> operating_point=max_accuracy n_images=10000

The key=value settings are aebnas-stream's (conf/stream.yaml): the run, the Pareto
network, the operating point, the images, the batch sizes, the device and threads.
Over that stream, at each batch size and in every one of ``--repeats`` rounds (the
order rotated from round to round, so the machine's drift spreads over all forms):

* ``static`` and ``adaptive``: the network as trained (``fold_batchnorm=false``);
* ``static_folded`` and ``adaptive_folded``: BatchNorm folded into the
  convolutions, what aebnas-stream runs by default;
* ``exported``: ``export_adaptive``'s program, saved, loaded back with
  ``torch.export.load`` and run through its ``.module()``;
* ``aoti`` (with ``--aoti``): that program compiled by AOTInductor.

The JSON has each form's median images/s and every round's, its accuracy and exit
histogram, whether its answers are the eager adaptive model's (``static_folded``:
the static network's), the ratios, the export's seconds and file size, and the
machine. CPU timing is noisy: read ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import stream_settings
from aebnas.runtime import AdaptiveModel
from aebnas.runtime.export import export_adaptive
from aebnas.runtime.run_network import load_run_network
from aebnas.runtime.stream import StreamSettings, adaptive_step, prepare_stream, static_step, timed_stream


def _at_point(model: AdaptiveModel, settings: StreamSettings) -> AdaptiveModel:
    model.set_operating_point(settings.operating_point, settings.min_accuracy, settings.max_macs)
    return model


def _program_step(program):
    def step(xb):
        with torch.inference_mode():
            return program(xb)

    return step


def _compile_aoti(program_path: Path, out_dir: Path) -> tuple[object | None, dict]:
    """AOTInductor's package of the exported program, or None and why it could not be built."""
    start = time.perf_counter()
    try:
        package = torch._inductor.aoti_compile_and_package(torch.export.load(program_path),
                                                           package_path=str(out_dir / "adaptive_aoti.pt2"))
        runner = torch._inductor.aoti_load_package(package)
    except Exception as exc:  # a compiler missing or failing is a finding of this benchmark, not its end
        return None, {"compiled": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return runner, {"compiled": True, "compile_seconds": time.perf_counter() - start}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--aoti", action="store_true", help="also compile the exported program with AOTInductor")
    p.add_argument("overrides", nargs="*", help="aebnas-stream settings, key=value (run= is required)")
    args = p.parse_args()
    settings = stream_settings([*args.overrides, "progress=false"])
    inputs = load_run_network(settings.run, settings.model, settings.device, settings.num_threads, settings.data_dir,
                              settings.recompute_operating_points, settings.exit_metric)
    plain = _at_point(AdaptiveModel.from_saved(inputs.saved, inputs.points), settings)
    folded = _at_point(AdaptiveModel.from_saved(inputs.saved, inputs.points, fold=True), settings)
    x, labels = prepare_stream(inputs.data.test, inputs.data.mean, inputs.data.std, settings.n_images, inputs.device)
    for model in (plain, folded):
        model.net.to(inputs.device)

    with tempfile.TemporaryDirectory(prefix="aebnas-export-") as tmp:
        _measure(args, settings, plain, folded, x, labels, Path(tmp))


def _measure(args, settings: StreamSettings, plain: AdaptiveModel, folded: AdaptiveModel, x: torch.Tensor,
             labels: np.ndarray, tmp: Path) -> None:
    start = time.perf_counter()
    export_adaptive(plain, x[:2], tmp / "adaptive.pt2")
    export = {"export_seconds": time.perf_counter() - start, "pt2_bytes": (tmp / "adaptive.pt2").stat().st_size}
    forms = {"static": static_step(plain.net), "static_folded": static_step(folded.net),
             "adaptive": adaptive_step(plain), "adaptive_folded": adaptive_step(folded),
             "exported": _program_step(torch.export.load(tmp / "adaptive.pt2").module())}
    if args.aoti:
        runner, export["aoti"] = _compile_aoti(tmp / "adaptive.pt2", tmp)
        if runner is not None:
            forms["aoti"] = _program_step(runner)

    result = {"settings": vars(args), "operating_point": list(plain.thresholds),
              "device": str(x.device), "torch": torch.__version__, "num_threads": torch.get_num_threads(),
              "test_images": int(x.shape[0]), **export, "batches": []}
    for b in settings.batch_sizes:
        names = list(forms)
        rounds: dict[str, list[float]] = {n: [] for n in names}
        answers, failed = {}, {}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                if name in failed:
                    continue
                try:
                    times, pred, where = timed_stream(forms[name], x, b, settings.warmup, name)
                except RuntimeError as exc:  # the compiled program refusing a batch size is a result too
                    failed[name] = str(exc)[:300]
                    continue
                rounds[name].append(x.shape[0] / float(times.sum()))
                answers.setdefault(name, (pred, where))
        row = {"batch_size": b, "forms": {}, "failed": failed}
        names = [n for n in names if n not in failed]
        for name in names:
            pred, where = answers[name]
            ref = answers.get("static" if name.startswith("static") else "adaptive")
            same = None if ref is None else bool(np.array_equal(pred, ref[0]) and
                                                 (where is None or np.array_equal(where, ref[1])))
            row["forms"][name] = {"images_per_second": float(np.median(rounds[name])), "rounds": rounds[name],
                                  "accuracy": float((pred == labels).mean()), "same_answers": same,
                                  "exit_histogram": None if where is None else
                                  np.bincount(where, minlength=plain.n_exits).tolist()}
        f = {n: row["forms"][n]["images_per_second"] for n in names}
        pairs = {"static_folded/static": ("static_folded", "static"),
                 "adaptive_folded/adaptive": ("adaptive_folded", "adaptive"),
                 "speedup_as_trained": ("adaptive", "static"), "speedup_folded": ("adaptive_folded", "static_folded"),
                 "exported/adaptive_folded": ("exported", "adaptive_folded"),
                 "aoti/adaptive_folded": ("aoti", "adaptive_folded")}
        row["ratios"] = {k: f[a] / f[b] for k, (a, b) in pairs.items() if a in f and b in f}  # failed forms: none
        result["batches"].append(row)
        shown = [f"{n} {f[n]:.0f}/s" + ("" if row["forms"][n]["same_answers"] is not False else " (answers differ)")
                 for n in names]
        print(f"batch {b}: " + ", ".join(shown + [f"{n} failed: {e}" for n, e in failed.items()]), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
