"""The sweep presets compose (methods, paper datasets, the SLURM launcher) and the paper sweep runs, reduced,
end to end on CIFAR-10/100 and SVHN files generated in their real on-disk formats, then aebnas-report reads it."""

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from aebnas.cli.common import config_dir
from aebnas.cli.report import report
from aebnas.cli.search import search
from tests.conftest import compose_config
from tests.formats import write_cifar10, write_cifar100, write_svhn

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))


def test_paper_sweep_lists_the_papers_grid_and_targets():
    cfg = compose_config(["experiment=paper"], hydra=True)
    assert dict(cfg.hydra.sweeper.params) == {"dataset": "cifar10,cifar100,svhn", "method": "aebnas,edanas,nachos",
                                              "seed": "0,1,2"}
    for dataset, target in (("cifar10", 4e7), ("cifar100", 6e7), ("svhn", 4e7), ("fashion_mnist", 4e7)):
        plain = OmegaConf.to_container(compose_config(["experiment=paper", f"dataset={dataset}"]), resolve=True)
        assert plain["search"]["target_macs"] == target and plain["space"]["name"] == "mbv3_32"
        assert (plain["search"]["pop_size"], plain["search"]["generations"], plain["trainer"]["epochs"]) == (40, 9, 5)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e.startswith("methods_")])
def test_method_sweeps_run_every_method(experiment):
    cfg = compose_config([f"experiment={experiment}"], hydra=True)
    assert cfg.hydra.sweeper.params.method.split(",") == ["aebnas", "edanas", "nachos", "static", "random", "manual"]
    assert cfg.search.target_macs > 0
    # the _gpu grid picks its device (a GPU where there is one); the others must finish on a CPU
    assert cfg.trainer.device == ("auto" if experiment.endswith("_gpu") else "cpu")


def test_gpu_method_grid_has_its_documented_size():
    cfg = compose_config(["experiment=methods_fashion_mnist_gpu"], hydra=True)
    assert cfg.hydra.sweeper.params.seed == "0,1,2" and cfg.dataset.name == "fashion_mnist"
    assert (cfg.search.pop_size, cfg.search.generations, cfg.trainer.epochs) == (12, 3, 3)
    assert cfg.space.name == "mbv3_32" and cfg.workers == 4 and cfg.search.target_macs == 4.0e7


def test_slurm_launcher_preset_composes():
    cfg = compose_config(["experiment=paper", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.partition, launcher.timeout_min) == (1, "gpu", 720)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, per_batch=8)
    write_cifar100(root, n_train=40)
    write_svhn(root, n_train=40)
    return root


@pytest.mark.slow
def test_paper_sweep_reduced_end_to_end(data_root, tmp_path):
    """experiment=paper on each dataset, each with one of the paper's methods (every dataset and every method run),
    shrunk to 2 candidates of 1 epoch in the tiny space on the files resized to 8x8 (both sampled: the surrogate
    search's first networks shrink with the budget)."""
    runs = (("cifar10", "aebnas"), ("cifar100", "edanas"), ("svhn", "nachos"))
    for dataset, method in runs:
        cfg = compose_config(["experiment=paper", f"dataset={dataset}", f"method={method}", "seed=0",
                        f"dataset.data_dir={data_root}", "dataset.val_size=10", "dataset.resolution=8",
                        "space=tiny", "search.pop_size=2", "search.generations=1", "search.n_doe=2", "trainer.epochs=1",
                        "trainer.device=cpu", "trainer.batch_size=16", "search.target_macs=2e5", "progress=false"])
        search(cfg, tmp_path / "sweep" / f"{dataset}_{method}")
    report([str(tmp_path / "sweep")], tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert sorted(zip(table["dataset"], table["method"])) == sorted(runs)
    assert (table["evaluations_mean"] == 2).all() and (table["seeds"] == 1).all()
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert (runs["hypervolume"] >= 0).all() and (runs["hypervolume"] <= 1).all()


def test_cpu_supernet_preset_is_the_reduced_method_setting_at_340_candidates():
    """docs/results/method-comparison.md's 340-candidate CPU runs were made with these overrides on methods_fashion_mnist; the
    preset must stay exactly that, so its command reproduces the table."""
    overrides = ["trainer.init=supernet", "supernet.exits=joint", "trainer.epochs=0", "supernet.epochs=10",
                 "supernet.batch_size=64", "search.pop_size=20", "search.generations=17", "search.final_epochs=3",
                 "workers=2", "run_name=fashion_mnist_supernet_cpu"]
    preset = OmegaConf.to_container(compose_config(["experiment=fashion_mnist_supernet_cpu"]), resolve=True)
    by_hand = OmegaConf.to_container(compose_config(["experiment=methods_fashion_mnist", *overrides]), resolve=True)
    assert preset == by_hand
    assert preset["search"]["pop_size"] * preset["search"]["generations"] >= 340
    sweep = compose_config(["experiment=fashion_mnist_supernet_cpu"], hydra=True).hydra.sweeper.params
    assert dict(sweep) == {"method": "aebnas,edanas,nachos,static,random,manual", "seed": "0,1,2"}
