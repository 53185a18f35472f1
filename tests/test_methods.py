"""Methods as configs: fixed exit heads, the growing NACHOS heads, random proposals, the manual network."""

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from aebnas.analysis import load_run
from aebnas.cost import network_cost
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.baselines import UniformResampling, manual_genomes
from aebnas.space import GenomeError, SearchSpace, SpaceSettings, SpaceConfigError
from aebnas.train import TrainerSettings
from tests.conftest import HAND_SPACE, ROOT, compose_config

METHODS = sorted(p.stem for p in (ROOT / "aebnas" / "conf" / "method").glob("*.yaml"))


def _compose(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(overrides), resolve=True)


def _space(**changes) -> SearchSpace:
    return SearchSpace(SpaceSettings.from_dict({**HAND_SPACE, **changes}))


def test_fixed_heads_leave_only_threshold_genes():
    space = _space(exit_heads="conv16k1+avg-conv16k1")
    assert space.n_var == 5 * (1 + 2 * 3) + 4
    assert [g.stop - g.start for g in space.groups[5:]] == [1, 1, 1, 1]
    # hand count: per stage 9 + 81 + 729 networks; per exit off or one of 6 thresholds
    assert space.size == (9 + 81 + 729) ** 5 * 7 ** 4
    rng = np.random.default_rng(0)
    for _ in range(50):
        g = space.sample(rng)
        assert space.parse(g.to_text()) == g and space.decode(space.encode(g)) == g
        assert all(e.to_text() == f"t{e.threshold!r}:conv16k1+avg-conv16k1" for e in g.active_exits)
    with pytest.raises(GenomeError, match="is not the space's fixed head 'conv16k1\\+avg-conv16k1'"):
        space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|off")
    assert SpaceSettings.from_dict(space.config.to_dict()) == space.config


@pytest.mark.parametrize("value, fragment", [
    (["conv8k3", "conv8k3"], "2 heads for 4 exit stages"),
    ("conv8k4", "odd kernel"),
    ("pool8k3", "needs a type in ['conv', 'dwsep', 'ir']"),
    ("conv8", "is not [pool-]<type><width>k<kernel>"),
])
def test_bad_exit_heads_name_the_field(value, fragment):
    with pytest.raises(SpaceConfigError, match="space.exit_heads") as info:
        _space(exit_heads=value)
    assert fragment in str(info.value)


def test_growing_heads_cost_more_with_depth():
    paper = SpaceSettings.from_dict(_compose("experiment=paper", "method=nachos")["space"])
    # (9w + w^2) / (4 * stride^2) per layer: 198, 122.5, 111.25, 211.75 -> 1, 2, 3, 2 layers
    assert paper.exit_heads == ("avg-dwsep24k3", "avg-dwsep40k3+dwsep40k3", "avg-dwsep80k3+dwsep80k3+dwsep80k3",
                                "avg-dwsep112k3+dwsep112k3")
    tiny = SpaceSettings.from_dict(_compose("experiment=quickstart", "method=nachos")["space"])
    for space, resolution in ((paper, 32), (tiny, 8)):
        s = SearchSpace(space)
        heads = network_cost(s.largest(with_exits=True), 10, 3, resolution).head_macs[:-1]
        assert all(a < b for a, b in zip(heads, heads[1:])), heads


def test_every_method_composes_to_its_restrictions():
    for method in METHODS:
        for experiment in ("quickstart", "paper"):
            plain = _compose(f"experiment={experiment}", f"method={method}")
            assert plain["method"]["name"] == method
            SearchSpace(SpaceSettings.from_dict(plain["space"]))
            SearchSettings.from_dict(plain["search"])
    # the default method restricts nothing: its file holds the method's name and its search (msunas) only
    assert yaml.safe_load((ROOT / "aebnas" / "conf" / "method" / "aebnas.yaml").read_text()) == {
        "defaults": [{"override /search": "msunas"}], "method": {"name": "aebnas"}}
    assert _compose()["method"]["name"] == "aebnas"
    for method in ("aebnas", "edanas", "nachos"):  # the published loop by default, NSGA-II on request
        assert _compose(f"method={method}")["search"]["algorithm"] == "msunas"
        assert _compose(f"method={method}", "search=nsga2")["search"]["algorithm"] == "nsga2"
    edanas = _compose("experiment=quickstart", "method=edanas")
    assert edanas["space"]["exit_heads"] == "conv16k1+avg-conv16k1" and edanas["search"]["exit_metric"] == "margin"
    assert _compose("experiment=paper", "method=nachos")["search"]["max_expected_macs"] == 4.0e7
    assert _compose("experiment=quickstart", "method=nachos")["search"]["max_expected_macs"] is None
    assert SpaceSettings.from_dict(_compose("method=static")["space"]).exit_stages == ()
    assert _compose("method=random")["search"]["algorithm"] == "random"
    # command-line values still win over the method's
    assert _compose("method=edanas", "search.exit_metric=entropy")["search"]["exit_metric"] == "entropy"


def test_manual_network_is_the_middle_backbone_at_each_global_threshold():
    space = SearchSpace(SpaceSettings.from_dict(_compose("method=manual")["space"]))
    texts = [g.to_text() for g in manual_genomes(space)]
    # tiny: depths [1, 2] -> 1, kernels [3, 5] -> 3, expansions [2, 3, 4] -> 3
    assert texts == ["k3e3/k3e3/k3e3/k3e3/k3e3" + f"|t{t}:avg-conv16k3" * 4 for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)]
    no_exits = SearchSpace(SpaceSettings.from_dict({**HAND_SPACE, "exit_stages": []}))
    assert [g.to_text() for g in manual_genomes(no_exits)] == ["k5e3-k5e3/k5e3-k5e3/k5e3-k5e3/k5e3-k5e3/k5e3-k5e3"]


def test_uniform_resampling_draws_fresh_uniform_genomes(tiny_space):
    X = np.zeros((5, tiny_space.n_var), dtype=np.int64)
    out = UniformResampling(tiny_space).do(None, _population(X), random_state=np.random.default_rng(7)).get("X")
    assert np.array_equal(out, tiny_space.sample_x(np.random.default_rng(7), 5))


def _population(X):
    from pymoo.core.population import Population

    return Population.new(X=X)


@pytest.mark.slow
def test_random_and_manual_runs_keep_their_budgets(tiny_space, small_synthetic, tmp_path):
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1)
    settings = SearchSettings(pop_size=3, generations=2, algorithm="random", exit_metric="max_softmax")
    run_search(SearchJob(tiny_space, small_synthetic, trainer, settings, torch.device("cpu"), tmp_path / "random",
                         progress=False, method="random"))
    run = load_run(tmp_path / "random")
    assert len(run.evaluations) == 6 and run.evaluations["key"].is_unique
    assert list(run.evaluations["generation"]) == [1, 1, 1, 2, 2, 2]
    assert run.summary["method"] == "random" and run.summary["algorithm"] == "random"

    manual_space = SearchSpace(SpaceSettings.from_dict(_compose("method=manual")["space"]))
    settings = SearchSettings(pop_size=40, generations=9, algorithm="manual", exit_metric="max_softmax")
    run_search(SearchJob(manual_space, small_synthetic, trainer, settings, torch.device("cpu"), tmp_path / "manual",
                         progress=False))
    run = load_run(tmp_path / "manual")
    assert sorted(run.evaluations["key"]) == sorted(g.to_text() for g in manual_genomes(manual_space))
    assert run.summary["evaluations"] == 6 and run.summary["trained_networks"] == 1
