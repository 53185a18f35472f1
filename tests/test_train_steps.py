"""The training step fit runs: eager, or recorded once as a CUDA graph (trainer.cuda_graphs)."""

import math

import pytest
import torch

from aebnas.data import load_dataset
from aebnas.nn import build_model
from aebnas.train import TrainerConfig, fit
from aebnas.train.steps import EagerTrainStep, GraphedTrainStep
from aebnas.train.trainer import BatchStream, _batches, cosine_factor, make_graphable_optimizer, make_train_step

GENOME = "k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv16k3|off|t0.9:conv16k3|off"


@pytest.fixture(scope="module")
def data():
    return load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 200, "resolution": 8, "channels": 1,
                         "val_size": 0.25, "seed": 1})


def _twin_models(tiny_space, data, device="cpu"):
    torch.manual_seed(0)
    a = build_model(tiny_space.parse(GENOME), data.num_classes, data.in_channels).to(device).train()
    b = build_model(tiny_space.parse(GENOME), data.num_classes, data.in_channels).to(device).train()
    b.load_state_dict(a.state_dict())
    return a, b


def _graphable_step(model, cfg, device, total):
    lr = torch.tensor(cfg.lr, device=device)
    opt = make_graphable_optimizer(model.parameters(), cfg, lr, cfg.weight_decay)
    eager = make_train_step(model, cfg, device, total)  # only for its loss function: the one fit uses
    return GraphedTrainStep(model, opt, lr, lambda s: cfg.lr * cosine_factor(s, total), eager.loss_fn, device,
                            amp=False)


def test_cosine_factor_by_hand():
    # 0.5 * (1 + cos(pi * s / 4)) for s = 0..4, and held at 0 past the end
    expected = [1.0, 0.5 * (1 + math.sqrt(0.5)), 0.5, 0.5 * (1 - math.sqrt(0.5)), 0.0, 0.0]
    assert [cosine_factor(s, 4) for s in range(6)] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_graphable_step_trains_exactly_as_the_eager_one(data, tiny_space, optimizer):
    """Fused optimizer, learning rate as a device tensor rewritten in place: the same weights as torch's
    optimizer under LambdaLR, step by step (off CUDA the graphable step runs eagerly, the arithmetic a graph
    would replay)."""
    cpu = torch.device("cpu")
    cfg = TrainerConfig(optimizer=optimizer, lr=0.1, weight_decay=1e-3, device="cpu", amp=False)
    a, b = _twin_models(tiny_space, data)
    start = {k: v.clone() for k, v in a.state_dict().items()}
    total = 4
    eager = make_train_step(a, cfg, cpu, total)
    graphable = _graphable_step(b, cfg, cpu, total)
    assert isinstance(eager, EagerTrainStep) and graphable.graph_state == "eager"
    gen = torch.Generator().manual_seed(3)
    lrs = []
    for _ in range(total):
        idx = torch.randint(0, len(data.train), (16,), generator=gen)
        xb, yb = data.train.x[idx].float() / 255, data.train.y[idx]
        la, lb = eager(xb, yb), graphable(xb, yb)
        lrs.append(float(graphable.lr))
        assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-4)
    assert lrs == pytest.approx([0.1 * cosine_factor(s, total) for s in range(total)])
    assert lrs[1] == pytest.approx(0.0853553, abs=1e-7)
    # Adam moves every weight by about lr whatever the size of its gradient, so where a gradient is rounding
    # noise (a bias right before BatchNorm) rounding decides the step's sign: compare the others. A schedule
    # one step off would show at 1e-2 (0.1 * (1 - 0.854)).
    compared = 0
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        keep = pa.grad.abs() > 1e-5 if optimizer == "adamw" else torch.ones_like(pa, dtype=torch.bool)
        compared += int(keep.sum())
        assert torch.allclose(pa[keep], pb[keep], atol=1e-6 if optimizer == "sgd" else 1e-3, rtol=1e-5), name
    assert compared > 0.8 * sum(p.numel() for p in a.parameters())
    assert max(float((p.detach() - start[n]).abs().max()) for n, p in a.named_parameters()) > 1e-3  # they did train


def test_drop_last_keeps_one_batch_shape():
    assert [len(b) for b in _batches(10, 4)] == [4, 4, 2]
    assert [len(b) for b in _batches(10, 4, drop_last=True)] == [4, 4]
    assert [len(b) for b in _batches(9, 4)] == [4, 4]  # a lone sample never trains BatchNorm
    assert [len(b) for b in _batches(3, 4, drop_last=True)] == [3]  # the only batch stays
    together = torch.cat(_batches(10, 4, torch.Generator().manual_seed(0), drop_last=True))
    assert len(set(together.tolist())) == 8  # a shuffled epoch without repeats


def test_batch_stream_with_drop_last(data):
    assert len(data.train) == 120
    stream = BatchStream(data, 32, 0, torch.device("cpu"), drop_last=True)
    assert stream.steps_per_epoch == 3
    assert [len(y) for _, y in stream.epoch()] == [32, 32, 32]  # the last 24 wait for another epoch's shuffle


def test_cuda_graphs_is_a_no_op_off_cuda(data, tiny_space):
    a, b = _twin_models(tiny_space, data)
    sa = fit(a, data, TrainerConfig(epochs=2, batch_size=64, device="cpu"), torch.device("cpu"))
    sb = fit(b, data, TrainerConfig(epochs=2, batch_size=64, device="cpu", cuda_graphs=True), torch.device("cpu"))
    assert sa.steps == sb.steps == 2 * math.ceil(len(data.train) / 64)
    assert sb.cuda_graph == "off"
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="records a CUDA graph")
def test_a_recorded_step_replays_the_eager_training(data, tiny_space):
    cuda = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    cfg = TrainerConfig(lr=0.05, device="cuda", amp=False)
    a, b = _twin_models(tiny_space, data, "cuda")
    total = 8
    graphed = _graphable_step(b, cfg, cuda, total)
    eager = _graphable_step(a, cfg, cuda, total)
    eager.graph_state = "eager"  # the same optimizer and schedule, never recorded
    gen = torch.Generator().manual_seed(3)
    for step in range(total):
        idx = torch.randint(0, len(data.train), (32,), generator=gen)
        xb, yb = (data.train.x[idx].float() / 255).to(cuda), data.train.y[idx].to(cuda)
        la, lb = eager(xb, yb), graphed(xb, yb)
        assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-3, abs=1e-4), step
    assert graphed.graph_state == "captured" and graphed.graph is not None
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-4, rtol=1e-3), name
    stats = fit(build_model(tiny_space.parse(GENOME), 4, 1), data,
                TrainerConfig(epochs=2, batch_size=64, device="cuda", cuda_graphs=True), cuda)
    assert stats.cuda_graph == "captured" and stats.steps == 2 * (len(data.train) // 64)
    assert math.isfinite(stats.final_loss)
