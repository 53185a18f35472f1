"""``aebnas-export``: a saved Pareto network written in forms that run without aebnas, checked, with a manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from aebnas.cli.common import check_overrides, config_dir, require_config_dir, user_errors
from aebnas.runtime.export_run import ExportSettings, run_export

PROG = "aebnas-export"


def export(cfg: DictConfig, out_dir: Path) -> dict:
    """Validate the settings, export and check every form, print where they are; returns export.json's content."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    settings = ExportSettings.from_dict({k: v for k, v in plain.items() if k != "hydra"})
    manifest = run_export(settings, out_dir)
    point = manifest["operating_point"]
    print(f"{manifest['genome']}\n  operating point {point['label']}: thresholds {point['thresholds']}, val accuracy "
          f"{point['val_accuracy']:.4f} at {point['val_expected_macs'] / 1e6:.3f}M expected MACs")
    for form, check in manifest["checks"].items():
        if "max_abs_logit_difference" in check:
            detail = f"logits within {check['max_abs_logit_difference']:.1e} of eager"
        elif form == "pt2":
            detail = ("the eager model's predictions and exits with BatchNorm folded" +
                      ("" if check["same_answers_as_trained"] else "; as trained, some differ by float rounding"))
        else:
            detail = "the eager model's predictions and exits"
        print(f"  {form:>13s}: {', '.join(manifest['files'][form])} ({detail}, on {check['images']} val images)")
    print(f"written: {out_dir / 'export.json'}")
    return manifest


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors(PROG):
        export(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    require_config_dir(PROG)
    check_overrides(PROG, sys.argv[1:], config_name="export")
    _hydra_main()


if __name__ == "__main__":
    main()
