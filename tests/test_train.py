import math

import pytest
import torch

import aebnas.nn.depthwise as depthwise
from aebnas.data import load_dataset
from aebnas.nn import build_model
from aebnas.train import (TrainerSettings, TrainingDiverged, candidate_cudnn, exit_loss_weights, fit, joint_exit_loss,
                          predict_logits)
from aebnas.train.trainer import make_train_step


@pytest.fixture(scope="module")
def data():
    return load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 600, "resolution": 8, "channels": 1,
                         "val_size": 0.25, "seed": 1})


def test_loss_weights():
    assert exit_loss_weights(3, "uniform") == [1.0, 1.0, 1.0]
    assert exit_loss_weights(4, "linear") == [0.25, 0.5, 0.75, 1.0]
    assert exit_loss_weights(2, [0.3, 0.5, 1.0]) == [0.5, 1.0]      # matched from the final exit backwards
    assert exit_loss_weights(3, [0.5, 1.0]) == [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="trainer.exit_weights"):
        exit_loss_weights(2, "cubic")


def test_joint_loss_is_the_weighted_sum():
    target = torch.tensor([0, 1])
    a, b = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    ce_a = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert joint_exit_loss([a, b], target, [0.5, 2.0]).item() == pytest.approx(0.5 * ce_a + 2.0 * math.log(2))


def test_distillation_mixes_the_final_exits_softened_predictions_into_each_early_exit():
    target = torch.tensor([0, 1])
    early = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    final = torch.tensor([[1.0, 0.0], [0.0, 3.0]], requires_grad=True)
    t, alpha, w_early = 2.0, 0.4, 0.5
    ce_early = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    ce_final = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-3))) / 2

    def kl(p_logits, q_logits):  # KL(p || q) of two-class softmaxes at temperature t
        p = torch.softmax(torch.tensor(p_logits) / t, 0)
        q = torch.softmax(torch.tensor(q_logits) / t, 0)
        return float((p * (p / q).log()).sum())
    kd = (kl([1.0, 0.0], [2.0, 0.0]) + kl([0.0, 3.0], [0.0, 1.0])) / 2 * t * t
    loss = joint_exit_loss([early, final], target, [w_early, 1.0], distill=alpha, temperature=t)
    # the exit's weight scales its whole loss, the distillation term included
    assert loss.item() == pytest.approx(w_early * ((1 - alpha) * ce_early + alpha * kd) + ce_final)
    # the final exit learns from the labels alone: the distillation term sends it no gradient
    loss.backward()
    reference = final.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(reference, target).backward()
    assert torch.allclose(final.grad, reference.grad)
    # an early exit that already predicts what the final exit predicts pays no distillation cost
    same = joint_exit_loss([final.detach(), final.detach()], target, [1.0, 1.0], distill=1.0, temperature=t)
    assert same.item() == pytest.approx(ce_final)


def test_the_training_step_distils_with_the_trainers_settings(data, tiny_space):
    g = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv16k3|off|off|off")
    model = build_model(g, data.num_classes, data.in_channels)
    generator = torch.Generator().manual_seed(0)
    # logits far apart, so the temperature changes the loss well beyond rounding
    outputs = [torch.randn(32, data.num_classes, generator=generator) * 4 for _ in range(2)]
    y = torch.randint(0, data.num_classes, (32,), generator=generator)
    cfg = TrainerSettings(device="cpu", exit_distill=0.7, distill_temperature=3.0)
    step = make_train_step(model, cfg, torch.device("cpu"), total_steps=10)
    loss = step.loss_fn(outputs, y).item()
    assert loss == pytest.approx(joint_exit_loss(outputs, y, [1.0, 1.0], distill=0.7, temperature=3.0).item())
    assert loss != pytest.approx(joint_exit_loss(outputs, y, [1.0, 1.0], distill=0.7, temperature=1.0).item())
    assert loss != pytest.approx(joint_exit_loss(outputs, y, [1.0, 1.0]).item())


def test_training_learns_every_exit(data, tiny_space):
    torch.manual_seed(0)
    g = tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv16k3|off|t0.9:conv16k3|off")
    model = build_model(g, data.num_classes, data.in_channels)
    before = predict_logits(model, data.val, data.mean, data.std, torch.device("cpu"))
    stats = fit(model, data, TrainerSettings(epochs=15, batch_size=64, device="cpu", crop_padding=1), torch.device("cpu"))
    after = predict_logits(model, data.val, data.mean, data.std, torch.device("cpu"))
    assert before.shape == after.shape == (3, len(data.val), 4)
    acc = (after.argmax(-1) == data.val.y.numpy()).mean(axis=1)
    assert stats.steps == 15 * math.ceil(len(data.train) / 64)
    assert acc.min() > 0.6, acc  # chance is 0.25


def test_fit_reports_each_epoch_mean_loss(data, tiny_space):
    seen = []
    model = build_model(tiny_space.smallest(), data.num_classes, data.in_channels)
    fit(model, data, TrainerSettings(epochs=3, batch_size=64, device="cpu"), torch.device("cpu"),
        on_epoch=lambda epoch, loss: seen.append((epoch, loss)))
    assert [e for e, _ in seen] == [1, 2, 3]
    losses = [loss for _, loss in seen]
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert losses[-1] < losses[0]  # it learns: the joint loss falls over three epochs


def test_a_quick_candidate_stays_quiet_and_a_slow_one_logs_epochs(data, tiny_space, caplog):
    from dataclasses import replace

    from aebnas.search import SearchSettings
    from aebnas.search.evaluator import CandidateEvaluator

    evaluator = CandidateEvaluator(data, TrainerSettings(epochs=2, batch_size=64, device="cpu"),
                                   SearchSettings(exit_metric="max_softmax"), torch.device("cpu"))
    with caplog.at_level("INFO", logger="aebnas.search"):
        evaluator.evaluate(tiny_space.smallest())  # well under the default 30 s
        assert "epoch" not in caplog.text
        evaluator.training = replace(evaluator.training, epoch_log_seconds=0.0)
        evaluator.evaluate(tiny_space.largest())
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert [line.split(": ")[1].split(",")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_divergence_is_reported(data, tiny_space):
    model = build_model(tiny_space.smallest(), data.num_classes, data.in_channels)
    with pytest.raises(TrainingDiverged):
        fit(model, data, TrainerSettings(epochs=2, lr=1e12, momentum=0.0, device="cpu"), torch.device("cpu"))


@pytest.mark.parametrize("patch, field", [({"epochs": -1}, "trainer.epochs"), ({"lr": 0}, "trainer.lr"),
                                          ({"optimizer": "adam"}, "trainer.optimizer"), ({"epoch": 3}, "trainer.epoch"),
                                          ({"label_smoothing": 1.0}, "trainer.label_smoothing"),
                                          ({"exit_distill": 1.5}, "trainer.exit_distill"),
                                          ({"distill_temperature": 0}, "trainer.distill_temperature"),
                                          ({"cudnn_benchmark": "off"}, "trainer.cudnn_benchmark"),
                                          ({"cudnn_depthwise": "no"}, "trainer.cudnn_depthwise"),
                                          ({"cuda_graphs": "yes"}, "trainer.cuda_graphs")])
def test_bad_trainer_config(patch, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        TrainerSettings.from_dict(patch)


def test_candidate_cudnn_sets_flags_on_cuda_only_and_puts_them_back():
    flags = torch.backends.cudnn
    before = (flags.enabled, flags.benchmark, depthwise._native)
    cuda = torch.device("cuda")  # a device object needs no GPU: only the switches are under test
    with candidate_cudnn(TrainerSettings(cudnn_depthwise=False, cudnn_benchmark=False), cuda):
        assert (flags.enabled, flags.benchmark, depthwise._native) == (before[0], False, True)
    assert (flags.enabled, flags.benchmark, depthwise._native) == before
    with candidate_cudnn(TrainerSettings(cudnn_depthwise=True, cudnn_benchmark=True), cuda):
        assert (flags.benchmark, depthwise._native) == (True, False)
    with candidate_cudnn(TrainerSettings(cudnn_benchmark=True), cuda, autotune=False):  # one-off passes: no tuning
        assert flags.benchmark is False
    with pytest.raises(RuntimeError):  # a failing candidate leaves the switches as they were too
        with candidate_cudnn(TrainerSettings(cudnn_depthwise=False, cudnn_benchmark=True), cuda):
            raise RuntimeError("candidate failed")
    assert (flags.enabled, flags.benchmark, depthwise._native) == before
    with candidate_cudnn(TrainerSettings(cudnn_depthwise=False, cudnn_benchmark=True), torch.device("cpu")):
        assert (flags.enabled, flags.benchmark, depthwise._native) == before
