"""The training step fit runs: eager, or recorded once as a CUDA graph (trainer.cuda_graphs)."""

import contextlib
import math

import pytest
import torch

from aebnas.data import load_dataset
from aebnas.nn import build_model
from aebnas.train import TrainerSettings, fit
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


def _graphable_step(model, cfg, device, total, tensors_on=None):
    """The step fit builds with trainer.cuda_graphs on ``device``; ``tensors_on`` keeps its learning rate on
    another device (the CPU, where a test only pretends to be on CUDA)."""
    lr = torch.tensor(cfg.lr, device=tensors_on or device)
    opt = make_graphable_optimizer(model.parameters(), cfg, lr, cfg.weight_decay)
    eager = make_train_step(model, cfg, lr.device, total)  # only for its loss function: the one fit uses
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
    cfg = TrainerSettings(optimizer=optimizer, lr=0.1, weight_decay=1e-3, device="cpu", amp=False)
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
    sa = fit(a, data, TrainerSettings(epochs=2, batch_size=64, device="cpu"), torch.device("cpu"))
    sb = fit(b, data, TrainerSettings(epochs=2, batch_size=64, device="cpu", cuda_graphs=True), torch.device("cpu"))
    assert sa.steps == sb.steps == 2 * math.ceil(len(data.train) / 64)
    assert sb.cuda_graph == "off"
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="records a CUDA graph")
@pytest.mark.parametrize("distill", [0.0, 0.5])
def test_a_recorded_step_replays_the_eager_training(data, tiny_space, monkeypatch, distill):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(GraphedTrainStep, "_process_failure", None)
    cfg = TrainerSettings(lr=0.05, device="cuda", amp=False, exit_distill=distill)
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
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values()):  # weights and BatchNorm statistics
        assert torch.allclose(ta.float(), tb.float(), atol=1e-4, rtol=1e-3), name
    with pytest.raises(ValueError, match="one size"):  # a replay never broadcasts a smaller batch
        graphed(xb[:8], yb[:8])
    # 120 training images at batch 32: 3 steps an epoch (the last 24 dropped), 6 in all: 3 warm-ups, the
    # recording and 2 replays
    stats = fit(build_model(tiny_space.parse(GENOME), 4, 1), data,
                TrainerSettings(epochs=2, batch_size=32, device="cuda", cuda_graphs=True, exit_distill=distill), cuda)
    assert stats.cuda_graph == "captured" and stats.steps == 2 * (len(data.train) // 32) == 6
    assert math.isfinite(stats.final_loss)


class _FakeStream:
    def __init__(self, device=None, name="side"):
        self.name = name

    def wait_stream(self, other):
        pass


class _FakeCuda:
    """Stand-ins for torch.cuda's streams and graphs, so the graph step's bookkeeping runs on the CPU: the
    "recording" fails the way a capture that hits an unsupported operator does, and ending it fails too."""

    def __init__(self):
        self.default = _FakeStream(name="default")
        self.current = self.default
        self.set_back = []

    def install(self, monkeypatch):
        fake = self

        class Graph:
            def replay(self):
                raise AssertionError("nothing was recorded")

        class FailingCapture:
            def __init__(self, graph, stream=None):
                self.stream = stream

            def __enter__(self):
                fake.current = self.stream  # torch makes the capture stream current ...

            def __exit__(self, *exc):  # ... and leaves it so when ending an invalidated capture fails
                raise RuntimeError("operation failed due to a previous error during capture")

        def set_stream(stream):
            fake.set_back.append(stream.name)
            fake.current = stream

        monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: fake.current)
        monkeypatch.setattr(torch.cuda, "set_stream", set_stream)
        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", FailingCapture)

    def capturing(self) -> bool:
        return self.current is not self.default


def test_a_failed_recording_trains_on_eagerly_and_the_process_stops_recording(data, tiny_space, monkeypatch, caplog):
    fake = _FakeCuda()
    fake.install(monkeypatch)
    monkeypatch.setattr(GraphedTrainStep, "_process_failure", None)
    cpu, as_cuda = torch.device("cpu"), torch.device("cuda")  # the step takes the CUDA path; tensors stay on the CPU
    cfg = TrainerSettings(lr=0.1, device="cpu", amp=False)
    a, b = _twin_models(tiny_space, data)
    eager = make_train_step(a, cfg, cpu, 6)
    step = _graphable_step(b, cfg, as_cuda, 6, tensors_on=cpu)
    real_run = step._run

    def run(x, y, zero_grad=True):  # inside the fake capture the body fails, as an uncapturable operator would
        if fake.capturing():
            raise RuntimeError("operation not permitted when stream is capturing")
        return real_run(x, y, zero_grad)
    step._run = run
    gen = torch.Generator().manual_seed(3)
    with caplog.at_level("WARNING", logger="aebnas.train"):
        for i in range(6):
            idx = torch.randint(0, len(data.train), (16,), generator=gen)
            xb, yb = data.train.x[idx].float() / 255, data.train.y[idx]
            la, lb = eager(xb, yb), step(xb, yb)
            assert float(la.detach()) == pytest.approx(float(lb.detach()), rel=1e-4), i
            assert step.graph_state == ("pending" if i < 3 else
                                        "failed: RuntimeError: operation not permitted when stream is capturing")
    assert fake.set_back == ["default"] and fake.current is fake.default  # our stream is current again
    assert "training eagerly" in caplog.text and "not permitted" in caplog.text  # the cause, not capture_end's
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6, rtol=1e-5)
    later = _graphable_step(b, cfg, as_cuda, 6, tensors_on=cpu)
    assert later.graph_state.startswith("failed: RuntimeError: operation not permitted")  # no second attempt
