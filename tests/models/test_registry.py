"""Every registered architecture: built for one grey channel, one logit; forward and backward on a tiny input;
a checkpoint round trip that gives identical outputs; a Grad-CAM layer that yields spatial activations, receives the
logit's gradient and gives Grad-CAM maps.

The parametrisation reads the registry, so an architecture added there is tested here without editing this file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoscan.errors import CheckpointError, ModelNotFoundError, PretrainedWeightsError
from pneumoscan.models.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from pneumoscan.models.registry import create_model, get_spec, gradcam_layer, list_models

NAMES = [spec.name for spec in list_models()]
# Inception-v3's stem needs at least 75 px; the others accept less, and 64 px keeps their forward passes short.
SIDE_FOR = {"inception_v3": 80}
SIDE = 64
# Every registered architecture runs in the default suite, VGG-16 (134 M parameters) included: its three cases take
# about 10 s on 2 busy cores (initialise, backward, a 0.5 GB checkpoint saved and loaded).
PARAMS = NAMES


def _checkpoint_state(name: str, model: torch.nn.Module) -> dict[str, object]:
    return {"format_version": 1, "model": {"name": name, "in_chans": 1, "num_classes": 1},
            "state_dict": model.state_dict(), "preprocess": {"image_size": SIDE},
            "class_names": ["NORMAL", "PNEUMONIA"]}


@pytest.fixture(scope="module", params=PARAMS)
def built(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, create_model(request.param)


def test_registry_lists_known_architectures() -> None:
    assert {"cnn", "resnet18", "efficientnet_lite0", "densenet121", "vgg16", "inception_v3"} <= set(NAMES)
    assert len(NAMES) == len(set(NAMES))


def test_forward_backward_one_grey_channel(built: tuple[str, torch.nn.Module]) -> None:
    name, model = built
    model.train()
    images = torch.rand(2, 1, SIDE_FOR.get(name, SIDE), SIDE_FOR.get(name, SIDE))
    logits = model(images)
    assert logits.shape == (2, 1), name
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0], [1.0]]))
    model.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), f"{name}: a parameter got no gradient"
    assert any(float(g.abs().sum()) > 0 for g in grads)
    first = next(p for p in model.parameters() if p.ndim == 4)
    assert first.shape[1] == 1, f"{name}: the stem does not take one channel"


@pytest.mark.parametrize("name", PARAMS)
def test_checkpoint_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    images = torch.rand(2, 1, SIDE_FOR.get(name, SIDE), SIDE_FOR.get(name, SIDE))
    with torch.no_grad():
        expected = model(images)
    path = save_checkpoint(_checkpoint_state(name, model), tmp_path / f"{name}.pt")
    rebuilt = build_model_from_checkpoint(load_checkpoint(path))
    with torch.no_grad():
        assert torch.equal(rebuilt(images), expected), name
    assert not rebuilt.training


def test_gradcam_layer_gives_spatial_activations(built: tuple[str, torch.nn.Module]) -> None:
    name, model = built
    model.eval()
    layer = gradcam_layer(model, name)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        with torch.no_grad():
            model(torch.rand(1, 1, SIDE_FOR.get(name, SIDE), SIDE_FOR.get(name, SIDE)))
    finally:
        handle.remove()
    assert seen, f"{name}: Grad-CAM layer {get_spec(name).gradcam_layer} is not on the forward path"
    act = seen[-1]
    assert act.ndim == 4 and act.shape[0] == 1 and act.shape[-1] >= 1, f"{name}: activations {tuple(act.shape)}"



def test_gradcam_layer_gets_the_logit_gradient_and_gives_a_map(built: tuple[str, torch.nn.Module]) -> None:
    """The named layer is one the logit depends on (its activations receive a gradient), and Grad-CAM through it
    (``pneumoscan.explain.gradcam``, what ``predict --explain`` runs) gives one finite map in [0, 1] per image."""
    from pneumoscan.explain.gradcam import gradcam

    name, model = built
    side = SIDE_FOR.get(name, SIDE)
    model.eval()
    layer = gradcam_layer(model, name)
    seen: list[torch.Tensor] = []

    def keep(_m: torch.nn.Module, _i: object, out: torch.Tensor) -> None:
        out.retain_grad()
        seen.append(out)

    handle = layer.register_forward_hook(keep)
    try:
        torch.manual_seed(1)
        model.zero_grad()
        model(torch.rand(1, 1, side, side)).sum().backward()
    finally:
        handle.remove()
    assert seen[-1].grad is not None and float(seen[-1].grad.abs().sum()) > 0, f"{name}: no gradient at the layer"
    maps = gradcam(model, name, np.random.default_rng(0).random((2, 1, side, side), dtype=np.float32))
    assert maps.shape == (2, side, side) and maps.dtype == np.float32, f"{name}: maps {maps.shape}"
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert not model.training

def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(ModelNotFoundError, match="available: .*resnet18"):
        create_model("resnet19")


def test_custom_cnn_has_no_imagenet_weights() -> None:
    with pytest.raises(PretrainedWeightsError, match="from scratch"):
        create_model("cnn", pretrained=True)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model("resnet18", weights=tmp_path / "nope.pth")


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    state = _checkpoint_state("resnet18", create_model("cnn"))
    path = save_checkpoint(state, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not fit architecture 'resnet18'"):
        build_model_from_checkpoint(load_checkpoint(path))
