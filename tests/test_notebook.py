"""notebooks/pareto_fronts.ipynb runs top to bottom on a tiny real run, so it cannot rot."""

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.train import TrainerSettings
from tests.conftest import ROOT


@pytest.mark.slow
def test_notebook_executes_on_a_tiny_run(tiny_space, small_synthetic, tmp_path, monkeypatch):
    settings = SearchSettings(pop_size=3, generations=1, exit_metric="max_softmax",
                              initial_genomes=("k3e2/k3e2/k3e2/k3e2/k3e2|t0.5:avg-conv8k3|off|t0.9:conv16k3|off",))
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1)
    run_search(SearchJob(tiny_space, small_synthetic, trainer, settings, torch.device("cpu"), tmp_path / "run",
                         progress=False))
    monkeypatch.setenv("AEBNAS_RUN_DIRS", str(tmp_path))
    nb = nbformat.read(ROOT / "notebooks" / "pareto_fronts.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit the notebook without outputs"
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # fronts, diagram, exit bars
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "stage 5" in html and "final classifier" in html and "inputs leaving here" in html
