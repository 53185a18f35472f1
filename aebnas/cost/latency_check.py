"""Does a latency table predict real networks? Measure random networks end to end and compare.

Each sampled network is built with ``aebnas.nn`` and every exit path is timed
as an adaptive runtime would run it for a sample leaving there: segments 0..k
and heads 0..k, nothing else, in the same interleaved passes as the profiler
(the quietest pass's median counts). The table's prediction for the same path is the
sum of its operators plus its per-path overhead (0 unless a calibration fitted one). The report gives MAPE and Spearman's rho over all
(network, path) pairs, raw and with a per-path overhead constant fitted on the
same measurements (median of measured minus predicted), so a user can see how
much the summation misses and whether one constant repairs it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from aebnas.cost.latency import LatencyTable, mape
from aebnas.cost.ops import network_cost
from aebnas.cost.profiler import DTYPES, HardwareSettings, quietest_pass, random_input, time_ms
from aebnas.nn import EarlyExitNet, build_model
from aebnas.space import SearchSpace


def time_paths(model: EarlyExitNet, x: torch.Tensor, hw: HardwareSettings, device: torch.device) -> list[np.ndarray]:
    """Call times (ms) of each exit path of ``model`` on ``x``: segments and heads up to exit k."""

    def path(k: int) -> None:
        h = x
        for i in range(k + 1):
            h = model.segments[i](h)
            model.heads[i](h)

    return [time_ms(lambda: path(k), hw.warmup, hw.repeats, device) for k in range(model.n_exits)]


def validate_table(table: LatencyTable, space: SearchSpace, hw: HardwareSettings, n_networks: int = 50, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Predicted vs measured latency of ``n_networks`` random networks, per exit path, with summary metrics."""
    device = hw.torch_device()
    hw.apply_threads()
    shape = table.shape
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x = random_input(shape.channels, shape.resolution, hw, device)
    rows = []
    genomes = [space.sample(rng) for _ in range(n_networks)]
    models = [build_model(g, shape.num_classes, shape.channels).eval().to(device=device, dtype=DTYPES[hw.dtype])
              for g in genomes]
    # the same interleaved passes as the profiler, so a burst of load hits predictions and measurements alike
    times: list[list[list[np.ndarray]]] = [[[] for _ in range(m.n_exits)] for m in models]
    with tqdm(total=hw.passes * n_networks, desc="validating", unit="net", disable=not progress,
              dynamic_ncols=True) as bar:
        for _ in range(hw.passes):
            for n, model in enumerate(models):
                for k, t in enumerate(time_paths(model, x, hw, device)):
                    times[n][k].append(t)
                bar.update(1)
    for n, genome in enumerate(genomes):
        measured = [quietest_pass(passes)[0] for passes in times[n]]
        predicted = table.path_ms(genome)
        path_macs = network_cost(genome, shape.num_classes, shape.channels, shape.resolution).path_macs
        for k, (p, m) in enumerate(zip(predicted, measured)):
            rows.append({"network": n, "exit": k, "final": k == len(measured) - 1, "genome": genome.to_text(),
                         "macs": int(path_macs[k]), "predicted_ms": p, "measured_ms": m})
    return {"summary": summarise(rows), "rows": rows}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """MAPE (%) and Spearman rho, raw and with the fitted per-path overhead, over all paths and final paths."""
    pred = np.array([r["predicted_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    final = np.array([r["final"] for r in rows])
    overhead = float(np.median(meas - pred)) if len(rows) else 0.0
    out: dict[str, Any] = {"paths": len(rows), "networks": len({r["network"] for r in rows}),
                           "fitted_overhead_ms": overhead}
    for label, sel in (("all_paths", np.ones_like(final, dtype=bool)), ("final_paths", final)):
        p, m = pred[sel], meas[sel]
        out[label] = {
            "mape_pct": mape(p.tolist(), m.tolist()),
            "spearman_rho": _rho(p, m),
            "mape_pct_with_overhead": mape((p + overhead).tolist(), m.tolist()),
            "macs_spearman_rho": _rho(np.array([r["macs"] for r, s in zip(rows, sel) if s]), m),
        }
    return out


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    return float(spearmanr(a, b).statistic)
