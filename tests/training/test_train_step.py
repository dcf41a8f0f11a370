"""The training step (shared by supervised training and SimCLR), one training epoch, the loss scaler and restoring a
fit, all in :mod:`pneumoscan.training.trainer` (tiny custom CNN, CPU)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.models import create_model
from pneumoscan.models.hardware import Hardware, resolve_hardware
from pneumoscan.training import trainer
from pneumoscan.training.config import TrainConfig
from pneumoscan.training.forward import predict_logits
from pneumoscan.training.pretrain import NTXentLoss, Pretrainer, SSLConfig
from pneumoscan.training.trainer import train_one_epoch
from tests.training.conftest import DISC_SIDE


def test_training_lowers_the_loss_and_predict_restores_the_mode(discs: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = discs
    torch.manual_seed(0)
    hw = resolve_hardware("cpu", "fp32")
    model = create_model("cnn").to(hw.device)
    pre = PreprocessConfig(image_size=DISC_SIDE)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = np.random.default_rng(0).permutation(len(images))
    losses = [train_one_epoch(model, images, labels, order, batch_size=16, preprocess=pre, hw=hw, optimizer=opt,
                              loss_fn=loss_fn, augment=None) for _ in range(6)]
    assert losses[-1] < losses[0]
    model.train()
    logits = predict_logits(model, images, batch_size=16, preprocess=pre, hw=hw)
    assert model.training, "predict_logits restores the previous mode"
    assert logits.shape == (48,)
    assert logits[labels == 1].mean() > logits[labels == 0].mean()


# -- one training step for supervised training and SimCLR -------------------------------------------------------

class _StepSpy:
    """Stands in for ``trainer.train_step``: records what every call receives, then runs the real step (or returns a
    constant loss with ``run=False``, for hardware this machine cannot run)."""

    def __init__(self, real: object, run: bool = True) -> None:
        self.real, self.run, self.calls = real, run, []

    def __call__(self, model: torch.nn.Module, loss_fn: object, inputs: torch.Tensor, targets: object, *,
                 optimizer: torch.optim.Optimizer, scaler: object, hw: object) -> torch.Tensor:
        self.calls.append({"loss_fn": loss_fn, "inputs": inputs.shape, "targets": targets, "scaler": scaler, "hw": hw})
        if not self.run:
            return torch.tensor(1.0)
        return self.real(model, loss_fn, inputs, targets, optimizer=optimizer, scaler=scaler, hw=hw)  # type: ignore


def _pretrainer(hw: Hardware, images: np.ndarray) -> Pretrainer:
    cfg = TrainConfig(model="cnn", image_size=DISC_SIDE, batch_size=8, epochs=1, device="cpu", precision="fp32")
    return Pretrainer(cfg, SSLConfig(probe=False), Path("unused"), images, hw)


def test_supervised_training_and_simclr_go_through_the_same_train_step(
        discs: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = discs
    spy = _StepSpy(trainer.train_step)
    monkeypatch.setattr(trainer, "train_step", spy)
    hw = resolve_hardware("cpu", "fp32")
    model = create_model("cnn")
    train_one_epoch(model, images, labels, np.arange(16), batch_size=8,
                    preprocess=PreprocessConfig(image_size=DISC_SIDE), hw=hw,
                    optimizer=torch.optim.SGD(model.parameters(), lr=0.01), loss_fn=torch.nn.BCEWithLogitsLoss(),
                    augment=None)
    supervised = list(spy.calls)
    assert len(supervised) == 2 and all(isinstance(c["loss_fn"], torch.nn.BCEWithLogitsLoss) for c in supervised)
    assert all(c["targets"].shape == (8, 1) for c in supervised)
    spy.calls.clear()
    loss = _pretrainer(hw, images[:16]).train_epoch()
    assert len(spy.calls) == 2 and math.isfinite(loss)
    for call in spy.calls:  # two augmented views per image, the NT-Xent loss, no targets
        assert isinstance(call["loss_fn"], NTXentLoss) and call["targets"] is None
        assert call["inputs"] == (16, 1, DISC_SIDE, DISC_SIDE)


def test_train_step_steps_the_optimizer_through_the_scaler() -> None:
    """With a GradScaler the loss is scaled and ``scaler.step`` calls ``optimizer.step``; without, it is called
    directly. A fake scaler records the calls (a real one needs CUDA)."""

    class FakeScaler:
        def __init__(self) -> None:
            self.log: list[str] = []

        def scale(self, loss: torch.Tensor) -> torch.Tensor:
            self.log.append("scale")
            return loss * 1024.0

        def step(self, optimizer: torch.optim.Optimizer) -> None:
            self.log.append("step")
            for group in optimizer.param_groups:  # unscale as GradScaler does
                for p in group["params"]:
                    p.grad /= 1024.0
            optimizer.step()

        def update(self) -> None:
            self.log.append("update")

    hw = resolve_hardware("cpu", "fp32")
    torch.manual_seed(0)
    inputs, targets = torch.randn(4, 3), torch.randn(4, 1)
    results = []
    for scaler in (None, FakeScaler()):
        torch.manual_seed(1)
        model = torch.nn.Linear(3, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = trainer.train_step(model, torch.nn.MSELoss(), inputs, targets, optimizer=optimizer,
                                 scaler=scaler, hw=hw)  # type: ignore[arg-type]
        assert not loss.requires_grad
        results.append(model.weight.detach().clone())
        if scaler is not None:
            assert scaler.log == ["scale", "step", "update"]
    torch.testing.assert_close(results[0], results[1])  # the same update, scaled or not


FP16_CPU = Hardware(device="cpu", amp_dtype=torch.float16, channels_last=False, description="fake fp16")


@pytest.mark.parametrize("hw, scaled", [(FP16_CPU, True), (Hardware("cpu", None, False, "cpu fp32"), False),
                                        (Hardware("cpu", torch.bfloat16, False, "cpu bf16"), False)])
def test_simclr_trains_with_a_grad_scaler_exactly_in_fp16(hw: Hardware, scaled: bool,
                                                          discs: tuple[np.ndarray, np.ndarray],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 SimCLR hands a GradScaler to the training step (it used to train unscaled); fp32 and bf16 need none."""
    spy = _StepSpy(trainer.train_step, run=False)  # fp16 cannot run on this CPU: only what the step receives counts
    monkeypatch.setattr(trainer, "train_step", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler("cuda") without CUDA warns that it disables itself
        pretrainer = _pretrainer(hw, discs[0][:16])
    pretrainer.train_epoch()
    assert spy.calls, "SimCLR did not go through trainer.train_step"
    for call in spy.calls:
        assert isinstance(call["scaler"], torch.amp.GradScaler) is scaled and call["hw"] is hw
    assert ("scaler" in pretrainer.state(0)) is scaled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 autocast and a working GradScaler)")
def test_fp16_simclr_on_cuda_scales_the_loss(discs: tuple[np.ndarray, np.ndarray],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    hw = resolve_hardware("cuda", "fp16")
    spy = _StepSpy(trainer.train_step)
    monkeypatch.setattr(trainer, "train_step", spy)
    pretrainer = _pretrainer(hw, discs[0][:16])
    loss = pretrainer.train_epoch()
    assert math.isfinite(loss)
    assert pretrainer.scaler is not None and pretrainer.scaler.is_enabled()
    assert all(c["scaler"] is pretrainer.scaler for c in spy.calls)
    assert pretrainer.scaler.get_scale() > 1.0  # the loss was scaled (initial scale 65536, halved on overflow)
    assert set(pretrainer.state(0)["scaler"]) >= {"scale", "growth_factor"}


# -- the loss scaler and resuming -----------------------------------------------------------------------------

def test_grad_scaler_only_for_fp16() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler("cuda") without CUDA warns that it disables itself
        assert isinstance(trainer.grad_scaler(FP16_CPU), torch.amp.GradScaler)
    assert trainer.grad_scaler(Hardware("cpu", None, False, "cpu fp32")) is None
    assert trainer.grad_scaler(Hardware("cpu", torch.bfloat16, False, "cpu bf16")) is None


def test_restore_fit_state_brings_back_weights_optimizer_scheduler_and_rng(
        discs: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = discs
    hw = resolve_hardware("cpu", "fp32")
    pre = PreprocessConfig(image_size=DISC_SIDE)

    def fresh() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        model = create_model("cnn")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    torch.manual_seed(0)
    model, optimizer, scheduler = fresh()
    train_one_epoch(model, images, labels, np.arange(16), batch_size=8, preprocess=pre, hw=hw, optimizer=optimizer,
                    loss_fn=torch.nn.BCEWithLogitsLoss(), augment=None)
    scheduler.step()
    state = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()}}
    expected_draw = torch.rand(3)
    torch.manual_seed(1)
    other, other_opt, other_sched = fresh()
    trainer.restore_fit_state(state, model=other, optimizer=other_opt, scheduler=other_sched, scaler=None)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(other.state_dict()[k], v, msg=k)
    assert other_sched.get_last_lr() == scheduler.get_last_lr() == [5e-4]
    assert other_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"] > 0
    torch.testing.assert_close(torch.rand(3), expected_draw)
