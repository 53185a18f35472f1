import pytest

from aebnas.search import SearchConfigError, SearchSettings


@pytest.mark.parametrize("patch, message", [
    ({"pop_size": 1}, "search.pop_size: must be an integer >= 2"),
    ({"pop_size": "8"}, "search.pop_size: must be an integer >= 2"),
    ({"generations": 0}, "search.generations: must be in [1, inf], got 0"),
    ({"objective": "aebnas"}, "search.target_macs: the 'aebnas' objective needs a positive target"),
    ({"objective": "macs_target"}, "search.target_macs: the 'macs_target' objective needs a positive target"),
    ({"objective": "speed"}, "search.objective: 'speed' is not one of"),
    ({"exit_metric": "vibes"}, "search.exit_metric: 'vibes' is not one of"),
    ({"threshold_tuning": "no"}, "search.threshold_tuning: expected true or false, got 'no'"),
    ({"max_expected_macs": -5}, "search.max_expected_macs: must be in (0, inf], got -5"),
    ({"max_expected_latency_ms": 0}, "search.max_expected_latency_ms: must be in (0, inf], got 0"),
    ({"max_accuracy_drop": "x"}, "search.max_accuracy_drop: expected a number"),
    ({"initial_genomes": 5}, "search.initial_genomes: expected a list of genome texts"),
    ({"pop_size": 2, "initial_genomes": ["a", "b", "c"]}, "search.initial_genomes: 3 genomes do not fit"),
    ({"popsize": 4}, "search.popsize: unknown key"),
])
def test_bad_search_settings(patch, message):
    with pytest.raises(SearchConfigError) as info:
        SearchSettings.from_dict(patch)
    assert str(info.value).startswith(message)


def test_defaults_match_the_shipped_yaml():
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    shipped = OmegaConf.to_container(compose_config(["search=nsga2"]).search, resolve=True)
    shipped["initial_genomes"] = tuple(shipped["initial_genomes"])
    assert SearchSettings.from_dict(shipped) == SearchSettings()


def test_latency_objective_and_budgets():
    from aebnas.search.objectives import constraint_values, n_constraints, objective_values

    s = SearchSettings.from_dict({"objective": "avg_latency", "max_expected_macs": 1e6, "max_expected_latency_ms": 2.0})
    assert s.needs_latency and s.cost_column == "expected_latency_ms" and n_constraints(s) == 2
    assert objective_values(s, 0.9, 5e5, 1.25) == pytest.approx([0.1, 1.25])
    assert constraint_values(s, 5e5, 2.5) == pytest.approx([5e5 - 1e6, 0.5])
    plain = SearchSettings.from_dict({"objective": "error_macs"})  # the older name of avg_macs still reads
    assert plain.objective == "avg_macs" and not plain.needs_latency and plain.cost_column == "expected_macs"
    assert objective_values(plain, 0.9, 5e5) == pytest.approx([0.1, 5e5]) and constraint_values(plain, 5e5) == []
