"""Vision MoRec: a ResNet (torchvision), Swin or ViT-MAE (HuggingFace) encoder as the item tower
(SPEC "Item towers").

    item image (3, S, S), normalised -> encoder -> feature h -> GELU(Linear(h, d))
    ResNet: the global-average-pooled vector (the input of its fc, which is dropped);
    Swin: the pooler output (mean of the last stage); ViT-MAE: the last layer's CLS token, with
    masking off (mask_ratio = 0 and the patches kept in their own order).
The feature h is also the two-stage (TS) feature.

Encoders are read from ``pretrained_models/<name>/``, offline (pretrained_models/README.md):
ResNet: one state-dict file (``*.pth`` / ``*.pt`` / ``*.bin``, read with ``weights_only=True``, or
``*.safetensors``) and optionally ``config.json`` {"arch": "resnet50"}; Swin / ViT-MAE: a
HuggingFace folder (config.json + model.safetensors or pytorch_model.bin), no remote code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from morec.errors import InputError
from morec.models.sasrec import init_xavier
from morec.models.towers import PixelTower, freeze_by_blocks

VISION_KINDS = ("resnet", "swin", "vit_mae")
RESNET_ARCHS = ("resnet18", "resnet34", "resnet50")
RESNET_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
HF_MODEL_TYPES = {"swin": "swin", "vit_mae": "vit_mae"}            # config.json model_type -> kind
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
EXPECTED = ("ResNet: one state-dict file (<arch>.pth, .pt, .bin or model.safetensors) and optionally "
            "config.json {\"arch\": \"resnet18|resnet34|resnet50\"} (else the folder name starts with "
            "the arch); Swin / ViT-MAE: a HuggingFace folder, config.json (model_type swin or vit_mae) "
            "+ model.safetensors (or pytorch_model.bin)")
WHERE = ("see pretrained_models/README.md for the supported vision encoders and how to get them on a "
         "machine with network")
# per kind: block pattern of the parameter names (group 1 = block, group 2 = block within a Swin
# stage), the parameters after the blocks (train with the top block), and those never trained:
# a pooler (unused; none of these has one with weights) and ViT-MAE's position embeddings
# (fixed sin-cos, frozen in MAE itself).
FREEZING = {
    "resnet": (re.compile(r"layer([1-4])\."), (), ("pooler.",)),
    "swin": (re.compile(r"encoder\.layers\.(\d+)\.(?:blocks\.(\d+)|downsample)\."), ("layernorm.",),
             ("pooler.",)),
    "vit_mae": (re.compile(r"(?:encoder\.layer|layers)\.(\d+)\."), ("layernorm.",),
                ("pooler.", "embeddings.position_embeddings")),
}


# ----------------------------------------------------------------------------- loading

def _read_config(config_file: Path) -> dict:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {config_file} ({type(err).__name__}: {err}); {WHERE}") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_file} is not a JSON object; {WHERE}")
    return config


def _hf_kind(config_file: Path) -> str | None:
    """The kind named by a config.json: None for a ResNet one ({"arch": ...}); errors name the file."""
    config = _read_config(config_file)
    if "model_type" in config:
        if config["model_type"] not in HF_MODEL_TYPES:
            raise InputError(f"{config_file}: model_type {config['model_type']!r} is not a supported "
                             f"vision encoder; supported: {', '.join(HF_MODEL_TYPES)} (or a ResNet "
                             f"folder with {{\"arch\": ...}}); {WHERE}")
        return HF_MODEL_TYPES[config["model_type"]]
    if "arch" not in config:
        raise InputError(f"{config_file} has neither \"arch\" (ResNet) nor \"model_type\" "
                         f"(HuggingFace Swin / ViT-MAE); {WHERE}")
    return None


def resnet_arch_and_weights(folder: Path) -> tuple[str, Path]:
    """(arch, state-dict file) of a ResNet folder: arch from config.json, else the folder name."""
    config_file = folder / "config.json"
    if config_file.exists():
        arch = _read_config(config_file).get("arch")
        source = f"{config_file} says arch {arch!r}"
    else:
        arch = next((a for a in RESNET_ARCHS if folder.name.startswith(a)), None)
        source = f"{folder} has no config.json and its name does not start with a ResNet arch"
    if arch not in RESNET_ARCHS:
        raise InputError(f"{source}; supported: {', '.join(RESNET_ARCHS)}; {WHERE}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in RESNET_SUFFIXES)
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise InputError(f"ResNet folder {folder} must hold exactly one state-dict file "
                         f"(*.pth, *.pt, *.bin or model.safetensors), found: {found}; {WHERE}")
    return arch, files[0]


def resolve_vision_encoder(name: str, pretrained_dir: Path) -> tuple[str, Path]:
    """(kind, folder) of the encoder ``pretrained_dir/name``, checked for the files it must hold."""
    if not name or "/" in name or name in (".", ".."):
        raise InputError(f"cv_model_load {name!r} must be a folder name under {pretrained_dir}")
    folder = Path(pretrained_dir) / name
    if not folder.is_dir():
        raise InputError(f"vision encoder folder {folder} not found (cv_model_load={name!r}); it must "
                         f"hold {EXPECTED}; {WHERE}")
    kind = _hf_kind(folder / "config.json") if (folder / "config.json").exists() else None
    if kind is None:
        resnet_arch_and_weights(folder)
        return "resnet", folder
    present = {p.name for p in folder.iterdir()}
    if not present & set(HF_WEIGHT_FILES):
        raise InputError(f"vision encoder folder {folder} is incomplete: missing model.safetensors "
                         f"(or pytorch_model.bin) (found: {', '.join(sorted(present))}); it must hold "
                         f"{EXPECTED}; {WHERE}")
    return kind, folder


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict read without running code: safetensors, or torch.load(weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:               # weights_only refuses pickled code: an error, not a run
        raise InputError(f"cannot read the state dict {path} ({type(err).__name__}: {err}); it must "
                         f"be a plain state dict (torch.save(model.state_dict(), ...)); {WHERE}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict (a dict of tensors); {WHERE}")
    return state


def load_resnet(folder: Path) -> nn.Module:
    import torchvision
    arch, path = resnet_arch_and_weights(folder)
    encoder = getattr(torchvision.models, arch)(weights=None)
    encoder.fc = nn.Identity()           # any classifier head in the file is dropped (SPEC: fc replaced)
    state = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("fc.")}
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InputError(f"the state dict {path} does not fit torchvision {arch} ({err}); is it "
                         f"the state dict of another arch? {WHERE}") from None
    return encoder


def load_hf_vision(folder: Path, kind: str) -> nn.Module:
    """SwinModel / ViTMAEModel of the folder (ViT-MAE with mask_ratio 0: SPEC, masking off)."""
    from morec.models.text import _quiet_transformers
    transformers = _quiet_transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True,
                                                         trust_remote_code=False)
        if kind == "vit_mae":
            config.mask_ratio = 0.0
        encoder, info = transformers.AutoModel.from_pretrained(
            str(folder), config=config, local_files_only=True, trust_remote_code=False,
            output_loading_info=True)
    except Exception as err:
        raise InputError(f"cannot load the vision encoder of {folder} ({type(err).__name__}: {err}); "
                         f"it must hold {EXPECTED}; {WHERE}") from None
    if info.get("missing_keys"):      # from_pretrained would leave these randomly initialised
        raise InputError(f"the weights in {folder} lack {len(info['missing_keys'])} tensors of the "
                         f"{type(encoder).__name__} (e.g. {sorted(info['missing_keys'])[:3]}); {WHERE}")
    return encoder


def load_vision_encoder(name: str, pretrained_dir: Path) -> tuple[nn.Module, str]:
    """(encoder, kind) on CPU; a ResNet's fc is an nn.Identity."""
    kind, folder = resolve_vision_encoder(name, pretrained_dir)
    return (load_resnet(folder) if kind == "resnet" else load_hf_vision(folder, kind)), kind


def vision_feature_dim(encoder: nn.Module, kind: str) -> int:
    """Width of the feature h: ResNet 512 (18 / 34) or 2048 (50); Swin / ViT-MAE hidden_size."""
    if kind == "resnet":
        return encoder.inplanes          # torchvision: the fc's in_features (512 x block expansion)
    return encoder.config.hidden_size


# ----------------------------------------------------------------------------- features

def resnet_features(encoder: nn.Module, pixels: torch.Tensor,
                    checkpoint_stages: bool = False) -> torch.Tensor:
    """(K, 3, S, S) -> (K, C): stem, the 4 stages (each recomputed in backward if
    checkpoint_stages), global average pool; the same as ``encoder(pixels)`` with fc = Identity."""
    x = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(pixels))))
    for stage in (encoder.layer1, encoder.layer2, encoder.layer3, encoder.layer4):
        x = checkpoint(stage, x, use_reentrant=False) if checkpoint_stages else stage(x)
    return torch.flatten(encoder.avgpool(x), 1)


def check_image_size(encoder: nn.Module, kind: str, size: int | tuple[int, int]) -> None:
    """ViT-MAE takes only its config's image_size (ResNet any size, Swin pads): else an InputError."""
    if kind != "vit_mae":
        return
    size = (size, size) if isinstance(size, int) else tuple(size)
    expected = tuple(encoder.embeddings.patch_embeddings.image_size)
    if size != expected:
        raise InputError(f"ViT-MAE encoder expects {expected[0]}x{expected[1]} images (its config.json "
                         f"image_size), got {size[0]}x{size[1]}: set --image_size {expected[0]}")


def encode_images(encoder: nn.Module, kind: str, pixels: torch.Tensor,
                  checkpoint_stages: bool = False) -> torch.Tensor:
    """pixels (K, 3, S, S), normalised -> features (K, H) (SPEC "Item towers"; the TS feature).

    ViT-MAE: its embeddings shuffle the patches by random noise even at mask_ratio 0 (all are
    kept); passing noise = 0, 1, 2, ... makes the order the identity, so the output is
    deterministic. ViT-MAE only takes its config's image_size; Swin pads other sizes.
    checkpoint_stages: ResNet only (HF encoders use activation_checkpointing_enable).
    """
    if len(pixels) == 0:
        return pixels.new_zeros(0, vision_feature_dim(encoder, kind))
    if kind == "resnet":
        return resnet_features(encoder, pixels, checkpoint_stages and torch.is_grad_enabled())
    if kind == "swin":
        return encoder(pixel_values=pixels).pooler_output
    if kind != "vit_mae":
        raise InputError(f"unknown vision encoder kind {kind!r}; supported: {', '.join(VISION_KINDS)}")
    embeddings = encoder.embeddings.patch_embeddings
    check_image_size(encoder, kind, tuple(pixels.shape[-2:]))
    noise = torch.arange(embeddings.num_patches, device=pixels.device, dtype=torch.float32)
    hidden = encoder(pixel_values=pixels, noise=noise.expand(len(pixels), -1)).last_hidden_state
    return hidden[:, 0]


# ----------------------------------------------------------------------------- freezing

def encoder_blocks(encoder: nn.Module, kind: str) -> list[tuple[str, nn.Parameter, int | None]]:
    """(name, parameter, block or None) in registration order. Blocks: ResNet the stages
    layer1..layer4 (1..4); Swin encoder.layers.s.blocks.b numbered across stages (a stage's
    patch-merging downsample counts with the first block of the next stage, which it feeds);
    ViT-MAE its transformer layers."""
    pattern = FREEZING[kind][0]
    named = [(n, p, pattern.match(n)) for n, p in encoder.named_parameters()]
    if kind != "swin":
        return [(n, p, int(m.group(1)) if m else None) for n, p, m in named]
    stage_block = sorted({(int(m.group(1)), int(m.group(2))) for _, _, m in named if m and m.group(2)})
    number = {key: i for i, key in enumerate(stage_block)}            # (stage, block) -> global block

    def block(m: re.Match | None) -> int | None:
        if m is None:
            return None
        stage = int(m.group(1))
        return number[(stage, int(m.group(2)))] if m.group(2) else number[(stage + 1, 0)]
    return [(n, p, block(m)) for n, p, m in named]


def freeze_vision_encoder(encoder: nn.Module, kind: str, freeze_paras_before: int = 0,
                          trainable_layers: int = -1) -> None:
    """Set requires_grad on the encoder's parameters (SPEC "Freezing"), as text.freeze_encoder:
    freeze_paras_before = k freezes the first k parameter tensors in registration order;
    trainable_layers = n >= 0 trains only the top n blocks (see encoder_blocks) and, with them,
    the final layer norm (Swin, ViT-MAE); stems / embeddings are then frozen; -1 turns it off."""
    if kind not in FREEZING:
        raise InputError(f"unknown vision encoder kind {kind!r}; supported: {', '.join(VISION_KINDS)}")
    _, after_blocks, never = FREEZING[kind]
    freeze_by_blocks(encoder_blocks(encoder, kind), freeze_paras_before, trainable_layers, after_blocks,
                     never, f"{kind} encoder")


# ----------------------------------------------------------------------------- the tower

class VisionTower(PixelTower):
    """pixels -> encoder -> feature (encode_images) -> GELU(Linear(feature, d)).

    freeze_bn_stats: BatchNorm uses its running statistics in training too (see `train`).
    The pixels of a batch's distinct items come with the batch (PixelTower.encode_items)."""

    def __init__(self, encoder: nn.Module, kind: str, dim: int, freeze_paras_before: int = 0,
                 trainable_layers: int = -1, gradient_checkpointing: bool = False, freeze_bn_stats: bool = False):
        super().__init__()
        if kind not in VISION_KINDS:
            raise InputError(f"unknown vision encoder kind {kind!r}; supported: {', '.join(VISION_KINDS)}")
        if kind == "vit_mae":
            encoder.config.mask_ratio = 0.0           # SPEC: masking off (read at every forward)
        self.encoder, self.kind, self.dim = encoder, kind, dim
        self.fc = nn.Linear(vision_feature_dim(encoder, kind), dim)
        init_xavier(self.fc)
        freeze_vision_encoder(encoder, kind, freeze_paras_before, trainable_layers)
        # ResNet: its 4 stages are recomputed in backward; BatchNorm (train mode) then updates
        # its running statistics twice per step (momentum ~0.19 instead of 0.1), unless frozen.
        self.checkpoint_stages = gradient_checkpointing and kind == "resnet"
        if gradient_checkpointing and kind != "resnet":
            encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.freeze_bn_stats = freeze_bn_stats
        self.train(self.training)

    def train(self, mode: bool = True) -> "VisionTower":
        """nn.Module.train; with freeze_bn_stats the encoder's BatchNorm layers stay in eval mode:
        they normalise with their running statistics and never update them (their affine weights
        still train, as freezing allows). Each item's vector then depends on that item alone, so
        gradient caching (--inbatch_chunk) equals the plain step."""
        super().train(mode)
        if self.freeze_bn_stats:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def use_channels_last(self) -> None:
        """ResNet on CUDA: channels-last weights (faster convolutions under AMP). Call once after
        moving the model to the GPU and before DDP / the optimizer see it (train.build_run_model)."""
        if self.kind == "resnet":
            self.encoder.to(memory_format=torch.channels_last)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(K, 3, S, S) normalised pixels -> (K, d); K may be 0."""
        if self.kind == "resnet" and self.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        features = encode_images(self.encoder, self.kind, pixels, self.checkpoint_stages)
        return F.gelu(self.fc(features))
