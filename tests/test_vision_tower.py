"""Vision MoRec (SPEC "Item towers"): loading ResNet / Swin / ViT-MAE encoders from their folders,
features, freezing and gradients -- on tiny random encoders built into temporary folders, on CPU."""
from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import REPO
from morec.errors import InputError
from morec.models.vision import (VISION_KINDS, VisionTower, encode_images, freeze_vision_encoder,
                                 load_vision_encoder, resolve_vision_encoder, vision_feature_dim)

sys.path.insert(0, str(REPO / "pretrained_models"))
from make_tiny import make_tiny_resnet, make_tiny_swin, make_tiny_vit_mae  # noqa: E402

S = 32                                         # image size of the tiny HF configs and of the tests
FOLDERS = {"resnet": "random_tiny_resnet18", "swin": "random_tiny_swin", "vit_mae": "random_tiny_vit_mae"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A pretrained_dir with the three tiny encoders (ViT-MAE's config says mask_ratio 0.75)."""
    root = tmp_path_factory.mktemp("vision-encoders")
    make_tiny_resnet(root / FOLDERS["resnet"])
    make_tiny_swin(root / FOLDERS["swin"], image_size=S)
    make_tiny_vit_mae(root / FOLDERS["vit_mae"], image_size=S)
    config_file = root / FOLDERS["vit_mae"] / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "mask_ratio": 0.75}))
    return root


def pixels(k: int, size: int = S) -> torch.Tensor:
    return torch.randn(k, 3, size, size, generator=torch.Generator().manual_seed(k))


def trainable(module: nn.Module) -> list[str]:
    return [name for name, p in module.named_parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- loading and features

@pytest.mark.parametrize("kind", VISION_KINDS)
def test_each_kind_loads_and_encodes(kind, root):
    assert resolve_vision_encoder(FOLDERS[kind], root) == (kind, root / FOLDERS[kind])
    encoder, loaded_kind = load_vision_encoder(FOLDERS[kind], root)
    assert loaded_kind == kind
    width = vision_feature_dim(encoder, kind)
    assert width == {"resnet": 512, "swin": 32, "vit_mae": 32}[kind]
    torch.manual_seed(0)
    tower = VisionTower(encoder, kind, dim=8).eval()
    assert tower.fc.in_features == width and tower.deduplicate
    with torch.no_grad():
        features = encode_images(encoder, kind, pixels(3))
        out = tower.encode_pixels(pixels(3))
        empty = tower.encode_pixels(pixels(0))
    assert features.shape == (3, width) and torch.isfinite(features).all()
    assert out.shape == (3, 8) and torch.isfinite(out).all()
    assert torch.allclose(out, nn.functional.gelu(tower.fc(features)))
    assert empty.shape == (0, 8)
    assert tower.train().encode_pixels(pixels(2)).shape == (2, 8)      # train mode (BatchNorm, drop path)
    assert len(tower.encoder_parameters()) == len(list(encoder.parameters()))


def test_resnet_loads_the_saved_weights_and_pools_as_torchvision(root, tmp_path):
    saved = torch.load(root / FOLDERS["resnet"] / "resnet18.pth", weights_only=True)
    encoder, _ = load_vision_encoder(FOLDERS["resnet"], root)
    assert isinstance(encoder.fc, nn.Identity)
    assert torch.equal(encoder.conv1.weight, saved["conv1.weight"])
    assert torch.equal(encoder.layer4[1].bn2.running_mean, saved["layer4.1.bn2.running_mean"])
    encoder.eval()
    x = pixels(2)
    with torch.no_grad():       # the fc input of torchvision's own forward; checkpointing changes nothing
        assert torch.allclose(encode_images(encoder, "resnet", x), encoder(x))
        assert torch.allclose(encode_images(encoder, "resnet", x, checkpoint_stages=True), encoder(x))
    # the same weights as model.safetensors, in a folder without config.json (arch from the name)
    from safetensors.torch import save_file
    (tmp_path / "resnet18_st").mkdir()
    save_file({k: v.contiguous() for k, v in saved.items()},
              str(tmp_path / "resnet18_st" / "model.safetensors"))
    again, kind = load_vision_encoder("resnet18_st", tmp_path)
    assert kind == "resnet" and torch.equal(again.layer3[0].conv1.weight, saved["layer3.0.conv1.weight"])


def test_resnet_state_dict_of_another_arch_is_refused_naming_the_file(root, tmp_path):
    folder = tmp_path / "resnet50_wrong"            # no config.json: the name says resnet50
    folder.mkdir()
    os.symlink(root / FOLDERS["resnet"] / "resnet18.pth", folder / "weights.pth")
    assert resolve_vision_encoder("resnet50_wrong", tmp_path) == ("resnet", folder)
    with pytest.raises(InputError, match=r"weights\.pth.*resnet50"):
        load_vision_encoder("resnet50_wrong", tmp_path)


def test_missing_or_incomplete_folders_are_input_errors(root, tmp_path):
    with pytest.raises(InputError, match=r"nowhere.*README\.md"):
        resolve_vision_encoder("nowhere", tmp_path)
    with pytest.raises(InputError, match="folder name"):
        resolve_vision_encoder("../x", tmp_path)
    (tmp_path / "resnet18").mkdir()                            # no state dict
    with pytest.raises(InputError, match=r"exactly one state-dict file.*found: none.*README\.md"):
        resolve_vision_encoder("resnet18", tmp_path)
    for name in ("a.pth", "b.pt"):                             # two state dicts
        (tmp_path / "resnet18" / name).write_bytes(b"")
    with pytest.raises(InputError, match="found: a.pth, b.pt"):
        resolve_vision_encoder("resnet18", tmp_path)
    (tmp_path / "pics").mkdir()                                # no config.json, name says no arch
    (tmp_path / "pics" / "w.pth").write_bytes(b"")
    with pytest.raises(InputError, match="name does not start with a ResNet arch"):
        resolve_vision_encoder("pics", tmp_path)
    (tmp_path / "pics" / "config.json").write_text('{"arch": "resnet99"}')
    with pytest.raises(InputError, match="resnet99"):
        resolve_vision_encoder("pics", tmp_path)
    shutil.copytree(root / FOLDERS["swin"], tmp_path / "swin")
    (tmp_path / "swin" / "model.safetensors").unlink()         # HF folder without weights
    with pytest.raises(InputError, match=r"missing model\.safetensors"):
        resolve_vision_encoder("swin", tmp_path)
    (tmp_path / "swin" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="model_type 'bert' is not a supported vision encoder"):
        resolve_vision_encoder("swin", tmp_path)


def test_hf_weights_lacking_tensors_are_refused(root, tmp_path):
    from safetensors.torch import load_file, save_file
    shutil.copytree(root / FOLDERS["swin"], tmp_path / "swin")
    state = load_file(str(tmp_path / "swin" / "model.safetensors"))
    del state["layernorm.weight"]
    save_file(state, str(tmp_path / "swin" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match="lack 1 tensors.*layernorm.weight"):
        load_vision_encoder("swin", tmp_path)


# the Hub checkpoints: facebook/vit-mae-base is a ViTMAEForPreTraining (encoder under "vit." + a
# decoder), microsoft/swin-*-patch4-window7-224 a SwinForImageClassification ("swin." + classifier)
HUB = {"vit_mae": ("vit.", "attention.attention.query.", "ViTMAEForPreTraining",
                   {"decoder.mask_token": (1, 1, 16)}),
       "swin": ("swin.", "attention.self.query.", "SwinForImageClassification",
                {"classifier.weight": (10, 32)})}


@pytest.mark.parametrize("kind", ["vit_mae", "swin"])
def test_checkpoints_in_the_hub_format_load(kind, root, tmp_path):
    """save_pretrained writes the transformers-4 tensor names (attention.self.query, ...), as on the
    Hub; such a file with the task model's prefix and head loads into the bare encoder, unchanged."""
    from safetensors.torch import load_file, save_file
    prefix, hub_name, architecture, head = HUB[kind]
    state = load_file(str(root / FOLDERS[kind] / "model.safetensors"))
    assert any(hub_name in name for name in state)
    folder = tmp_path / "hub"
    folder.mkdir()
    config = json.loads((root / FOLDERS[kind] / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": [architecture]}))
    save_file({**{prefix + name: tensor for name, tensor in state.items()},
               **{name: torch.zeros(shape) for name, shape in head.items()}},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    encoder, _ = load_vision_encoder("hub", tmp_path)
    reference, _ = load_vision_encoder(FOLDERS[kind], root)
    assert encoder.state_dict().keys() == reference.state_dict().keys()
    loaded = encoder.state_dict()
    assert all(torch.equal(tensor, loaded[name]) for name, tensor in reference.state_dict().items())


class RunsCode:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "resnet18_evil"
    folder.mkdir()
    payload = pickle.dumps(RunsCode(f"echo pwned > {marker}"), protocol=2)
    (folder / "resnet18.pth").write_bytes(payload)
    with pytest.raises(InputError, match=r"resnet18\.pth"):
        load_vision_encoder("resnet18_evil", tmp_path)
    assert not marker.exists()
    pickle.loads(payload)                      # the payload is live: plain unpickling runs it
    assert marker.read_text().strip() == "pwned"


def test_vit_mae_keeps_every_patch_and_is_deterministic(root):
    encoder, kind = load_vision_encoder(FOLDERS["vit_mae"], root)
    assert encoder.config.mask_ratio == 0.0                    # config.json said 0.75
    encoder.eval()
    num_patches = (S // encoder.config.patch_size) ** 2
    x = pixels(4)
    with torch.no_grad():
        out = encoder(pixel_values=x)                          # HF's own call: random patch order
        assert out.last_hidden_state.shape == (4, 1 + num_patches, 32)
        assert out.mask.sum() == 0                             # nothing masked
        first, second = encode_images(encoder, kind, x), encode_images(encoder, kind, x)
        assert torch.equal(first, second)
        assert torch.allclose(first, out.last_hidden_state[:, 0], atol=1e-5)   # the same CLS, up to order
        encoder.config.mask_ratio = 0.75                       # the tower turns masking off too
        tower = VisionTower(encoder, kind, dim=8).eval()
        assert torch.equal(tower.encode_pixels(x), tower.encode_pixels(x))
        assert torch.allclose(tower.encode_pixels(x), nn.functional.gelu(tower.fc(first)))
    with pytest.raises(InputError, match=f"expects {S}x{S}"):
        encode_images(encoder, kind, pixels(2, size=2 * S))


# ----------------------------------------------------------------------------- freezing

def test_resnet_freezing(root):
    encoder, _ = load_vision_encoder(FOLDERS["resnet"], root)
    names = [name for name, _ in encoder.named_parameters()]
    freeze_vision_encoder(encoder, "resnet", trainable_layers=1)
    assert trainable(encoder) == [n for n in names if n.startswith("layer4.")] and trainable(encoder)
    freeze_vision_encoder(encoder, "resnet", trainable_layers=0)
    assert trainable(encoder) == []
    for k in (0, 3, 45, len(names) + 5):                      # ResNet-18: layer4 starts at tensor 45
        freeze_vision_encoder(encoder, "resnet", freeze_paras_before=k)
        assert trainable(encoder) == names[k:]
    freeze_vision_encoder(encoder, "resnet", freeze_paras_before=45)
    freeze_paras = trainable(encoder)
    freeze_vision_encoder(encoder, "resnet", trainable_layers=1)
    assert trainable(encoder) == freeze_paras
    with pytest.raises(InputError, match="exceeds"):
        freeze_vision_encoder(encoder, "resnet", trainable_layers=5)
    with pytest.raises(InputError, match="freeze_paras_before"):
        freeze_vision_encoder(encoder, "resnet", freeze_paras_before=-1)


def test_swin_trainable_layers_count_blocks_across_stages():
    from transformers import SwinConfig, SwinModel
    encoder = SwinModel(SwinConfig(image_size=S, patch_size=4, embed_dim=8, depths=[2, 1], num_heads=[1, 1],
                                   window_size=4))

    def parts(names: list[str]) -> set[str]:        # block / downsample / top-level module of each name
        return {re.match(r"encoder\.layers\.\d+\.(blocks\.\d+|downsample)|\w+", n).group(0) for n in names}

    # the top block, the patch merging (downsample) that feeds it, the final layer norm
    top = {"encoder.layers.1.blocks.0", "encoder.layers.0.downsample", "layernorm"}
    freeze_vision_encoder(encoder, "swin", trainable_layers=1)
    assert parts(trainable(encoder)) == top
    freeze_vision_encoder(encoder, "swin", trainable_layers=2)
    assert parts(trainable(encoder)) == top | {"encoder.layers.0.blocks.1"}
    freeze_vision_encoder(encoder, "swin", trainable_layers=3)
    assert parts(trainable(encoder)) == top | {"encoder.layers.0.blocks.1", "encoder.layers.0.blocks.0"}
    freeze_vision_encoder(encoder, "swin", trainable_layers=-1)
    assert "embeddings" in parts(trainable(encoder))
    with pytest.raises(InputError, match="exceeds the swin encoder's 3 blocks"):
        freeze_vision_encoder(encoder, "swin", trainable_layers=4)


def test_vit_mae_freezing_keeps_position_embeddings_fixed(root):
    encoder, _ = load_vision_encoder(FOLDERS["vit_mae"], root)
    freeze_vision_encoder(encoder, "vit_mae")
    assert "embeddings.position_embeddings" not in trainable(encoder)
    assert len(trainable(encoder)) == len(list(encoder.parameters())) - 1
    freeze_vision_encoder(encoder, "vit_mae", trainable_layers=1)
    assert trainable(encoder) and all(n.startswith(("layers.1.", "layernorm.")) for n in trainable(encoder))


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("kind", VISION_KINDS)
def test_gradients_reach_fc_and_trainable_encoder_tensors(kind, root, monkeypatch):
    """trainable_layers=1: the fc and the top block get gradients, the stem none; gradient
    checkpointing is on when asked and gives the same gradients."""
    import morec.models.vision as vision
    calls = []

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs)
        return torch.utils.checkpoint.checkpoint(*args, **kwargs)
    monkeypatch.setattr(vision, "checkpoint", counting_checkpoint)
    encoder, _ = load_vision_encoder(FOLDERS[kind], root)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        tower = VisionTower(copy.deepcopy(encoder), kind, dim=8, trainable_layers=1,
                            gradient_checkpointing=checkpointing).train()
        torch.manual_seed(1)                                   # the same drop path draws
        tower.encode_pixels(pixels(3)).pow(2).sum().backward()
        top = next(p for n, p in tower.encoder.named_parameters() if p.requires_grad and p.ndim > 1)
        stem = next(iter(tower.encoder.parameters()))
        assert tower.fc.weight.grad.abs().sum() > 0 and top.grad.abs().sum() > 0
        assert stem.grad is None and not stem.requires_grad
        grads.append((tower.fc.weight.grad, top.grad))
        if kind == "resnet":                                   # the 4 stages, non-reentrant
            assert calls == ([{"use_reentrant": False}] * 4 if checkpointing else [])
        else:
            layers = [m for m in tower.encoder.modules() if hasattr(m, "gradient_checkpointing")]
            assert layers and all(m.gradient_checkpointing == checkpointing for m in layers)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))
