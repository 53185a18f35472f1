"""``aebnas-export``'s job: one of a run's Pareto networks written in forms that run without aebnas.

Every form is loaded back and checked on val images against the eager model before the manifest
(``export.json``) calls it done, and the manifest says what a device needs beside the file: the
input shape and the normalisation, the classes, the exit rule and its thresholds.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch

from aebnas.data import normalize
from aebnas.nn import fold_batchnorm
from aebnas.runtime.adaptive import AdaptiveModel
from aebnas.runtime.export import (export_adaptive, export_onnx_all_exits, export_onnx_segments, require_onnx,
                                   script_adaptive)
from aebnas.runtime.operating_points import path_costs_with
from aebnas.runtime.run_network import RunChoiceSettings, load_run_network, operating_point_setting, point_label
from aebnas.atomic_write import write_text_atomic
from aebnas.config_checks import ConfigError, setting

log = logging.getLogger("aebnas.runtime")

# form -> file or folder it writes, under the output directory
FORMATS = {"pt2": "adaptive.pt2", "torchscript": "adaptive_torchscript.pt", "onnx": "all_exits.onnx",
           "onnx_segments": "segments"}


def _check_formats(value: Any, name: str, error: type[Exception]) -> tuple[str, ...]:
    if isinstance(value, str):  # formats=pt2 or 'formats=pt2,onnx'
        value = [f.strip() for f in value.split(",") if f.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise error(f"{name}: give a list of {list(FORMATS)}, e.g. formats=[pt2,onnx]; got {value!r}")
    for i, f in enumerate(value):
        if f not in FORMATS:
            raise error(f"{name}[{i}]: unknown form '{f}'; use some of {list(FORMATS)}")
    return tuple(dict.fromkeys(value))


@dataclass(frozen=True)
class ExportSettings(RunChoiceSettings):
    """The ``aebnas-export`` config (conf/export.yaml), checked field by field before any work starts."""

    section: ClassVar[str] = "export"

    operating_point: str | None = operating_point_setting("bounded_loss")
    formats: tuple[str, ...] = setting(("pt2", "torchscript"), check=_check_formats,
                                       allowed="some of " + " | ".join(FORMATS),
                                       help="pt2: torch.export of the adaptive model; torchscript: the same for "
                                            "LibTorch; onnx: one graph, every exit's logits an output; onnx_segments: "
                                            "one graph per segment (needs the export extra).")
    check_images: int = setting(256, lo=1, help="Val images each form is checked on against the eager model.")

    def check_together(self) -> None:
        super().check_together()
        if any(f.startswith("onnx") for f in self.formats):
            _require_onnx_runtime()


def _require_onnx_runtime() -> None:
    try:
        require_onnx(dynamo=True)
        import onnxruntime  # noqa: F401  (the checks run the graphs)
    except ImportError:
        raise ConfigError("formats: the onnx forms need the export extra: pip install -e \".[export]\" (onnx, "
                          "onnxscript, onnxruntime); or leave them out, e.g. formats=[pt2,torchscript]") from None


# Loggers whose notes say nothing to a user of this export: torch.export's per-symbol load notes and the
# ONNX exporter's rewrite passes (pages of INFO lines under Hydra's logging).
_CHATTY = ("torch._export.serde.serialize", "onnxscript", "onnx_ir", "torch.onnx")


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The exporters' chatter and TorchScript's deprecation (said once in the docs) off for the export."""
    loggers = [logging.getLogger(name) for name in _CHATTY]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(a, b))


def _check_adaptive(run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
                    want: AdaptiveModel) -> dict:
    pred, where = run(x)
    ref = want(x)
    same = _same(pred, ref.prediction) and _same(where, ref.exit_index)
    return {"images": int(x.shape[0]), "same_answers": same, "passed": same}


def _onnx_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


LOGIT_TOLERANCE = 1e-3


def _check_logits(got: list[np.ndarray], want: list[torch.Tensor]) -> dict:
    """ONNX runtimes compute in their own order of operations: logits agree to rounding, not bit for bit."""
    diff = max(float(np.abs(g - w.cpu().numpy()).max()) for g, w in zip(got, want))
    return {"images": int(want[0].shape[0]), "max_abs_logit_difference": diff, "tolerance": LOGIT_TOLERANCE,
            "passed": diff <= LOGIT_TOLERANCE}


class ExportCheckError(RuntimeError):
    """An exported form answered otherwise than the eager model: the export is not finished."""


EXIT_RULE = ("an image leaves at the first enabled exit whose confidence (exit_metric of the softmax of that exit's "
             "logits, in float64) is >= the exit's threshold; a null threshold switches the exit off (its head is "
             "not run); an image that reaches the final classifier takes its prediction")


def _write_form(form: str, path: Path, model: AdaptiveModel, example: torch.Tensor, x: torch.Tensor) -> tuple[
        list[Path], dict]:
    """Write one form, load it back and check it on ``x``: the files written and the check."""
    if form == "pt2":
        export_adaptive(model, example, path)
        program = torch.export.load(path).module()
        folded = AdaptiveModel(fold_batchnorm(model.net), model.thresholds, model.metric)
        check = _check_adaptive(program, x, folded)  # what the program is: the folded network's rule
        check["same_answers_as_trained"] = _check_adaptive(program, x, model)["same_answers"]
        return [path], check
    if form == "torchscript":
        script_adaptive(model, path)
        return [path], _check_adaptive(torch.jit.load(str(path)), x, model)
    if form == "onnx":
        export_onnx_all_exits(model.net, example, path)
        return [path], _check_logits(_onnx_session(path).run(None, {"input": x.numpy()}), model.net(x))
    for stale in path.glob("segment_*.onnx"):  # from an earlier export of a network with more exits
        stale.unlink()
    segments = export_onnx_segments(model.net, example, path)
    features, got = x.numpy(), []
    for segment in segments:
        features, logits = _onnx_session(segment).run(None, {"input": features})
        got.append(logits)
    return segments, _check_logits(got, model.net(x))


def run_export(settings: ExportSettings, out_dir: Path) -> dict:
    """Write each form, load it back, check it, and write the manifest last: no manifest, no finished export.

    ``settings.device`` computes missing operating points; the forms are written and checked on the CPU,
    so that they load on any device.
    """
    found = load_run_network(settings.run, settings.model, settings.device, settings.num_threads, settings.data_dir,
                             settings.recompute_operating_points, settings.exit_metric)
    saved, data = found.saved, found.data
    model = AdaptiveModel.from_saved(saved, found.points)
    point = model.set_operating_point(settings.operating_point, settings.min_accuracy, settings.max_macs)
    n = min(settings.check_images, len(data.val))
    x = normalize(data.val.x[:n], data.mean, data.std)
    model.net.to("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "export.json").unlink(missing_ok=True)  # an earlier export's manifest must not vouch for new files
    files, checks = {}, {}
    with _quiet_exporters(), torch.no_grad():
        for form in settings.formats:
            path = out_dir / FORMATS[form]
            log.info("exporting %s to %s", form, path)
            try:
                written, checks[form] = _write_form(form, path, model, x[:2], x)
            except ValueError as exc:  # fold_batchnorm's refusal of a network it cannot fold
                raise ExportCheckError(f"export: {form}: {exc}") from None
            files[form] = [str(p.relative_to(out_dir)) for p in written]
    failed = {f: c for f, c in checks.items() if not c["passed"]}
    if failed:
        raise ExportCheckError(f"export: {list(failed)} disagreed with the eager model on {n} val images ({failed}); "
                               f"the files are in {out_dir}, export.json is not written")
    manifest = {
        "run": str(found.run_path), "model_dir": str(saved.path), "genome": saved.net.genome.to_text(),
        "dataset": data.name, "input_shape": [data.in_channels, data.resolution, data.resolution],
        "input_dtype": "float32", "normalize": {"mean": list(data.mean), "std": list(data.std),
                                                "how": "x = (pixels / 255 - mean) / std, per channel"},
        "num_classes": data.num_classes, "class_names": data.class_names, "exit_metric": model.metric,
        "exit_rule": EXIT_RULE,
        "operating_point": {"label": point_label(settings.operating_point, settings.min_accuracy, settings.max_macs),
                            "thresholds": list(point.thresholds), "val_accuracy": point.val_accuracy,
                            "val_expected_macs": point.expected_macs},
        "static_macs": saved.cost.static_macs,
        "path_macs": path_costs_with(saved.cost, np.isfinite(model.thresholds)).tolist(),  # exits off cost nothing
        "outputs": {"pt2": "(prediction, exit_index) per image; BatchNorm folded",
                    "torchscript": "(prediction, exit_index) per image",
                    "onnx": "input 'input'; outputs exit_0 ... exit_{n-1}: every exit's logits, final last",
                    "onnx_segments": "segment_k.onnx: input 'input' (image or features), outputs 'features' and "
                                     "exit k's 'logits'"},
        "files": files, "checks": checks, "torch": torch.__version__,
    }
    manifest["outputs"] = {f: manifest["outputs"][f] for f in settings.formats}
    write_text_atomic(out_dir / "export.json", json.dumps(manifest, indent=2))
    return manifest
