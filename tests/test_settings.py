import pytest

from aebnas.search import SearchConfigError, SearchSettings


@pytest.mark.parametrize("patch, message", [
    ({"pop_size": 1}, "search.pop_size: must be an integer >= 2"),
    ({"pop_size": "8"}, "search.pop_size: must be an integer >= 2"),
    ({"generations": 0}, "search.generations: must be in [1, inf], got 0"),
    ({"objective": "aebnas"}, "search.target_macs: the 'aebnas' objective needs a positive target"),
    ({"objective": "speed"}, "search.objective: 'speed' is not one of"),
    ({"exit_metric": "vibes"}, "search.exit_metric: 'vibes' is not one of"),
    ({"threshold_tuning": "no"}, "search.threshold_tuning: expected true or false, got 'no'"),
    ({"max_expected_macs": -5}, "search.max_expected_macs: must be in (0, inf], got -5"),
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
    import yaml

    from tests.conftest import ROOT

    shipped = yaml.safe_load((ROOT / "conf" / "search" / "nsga2.yaml").read_text())
    shipped["initial_genomes"] = tuple(shipped["initial_genomes"])
    assert SearchSettings.from_dict(shipped) == SearchSettings()
