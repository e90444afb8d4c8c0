"""IISAN: a decoupled side adapter network over cached per-layer item states (--side_network iisan).

Fu et al., SIGIR 2024, "IISAN: Efficiently Adapting Multimodal Representation for Sequential
Recommendation with Decoupled PEFT" (public code: GAIR-Lab/IISAN, Code_Cached/model/model.py,
IISANAdaptedMModel; Code_Cached/model/modules.py, AdapterBlock). The backbones stay frozen and
never run in training: each item's per-layer states are cached once (morec.features, the
`--two_stage true --ts_layers all` cache, (N+1, J, H) with J = num_layers + 1, the embedding
output first). A side adapter network (SAN) trains beside each backbone:

    s_0 = H_0                                             (the embedding output)
    s_i = A_i(g_i * H_l(i) + (1 - g_i) * s_(i-1)),  g_i = sigmoid(w_i / 0.1)   i = 1 .. B
    A(x) = x + W_up act(W_down x + b_down) + b_up                    (W_down: (r, H), W_up: (H, r))

with one learnable scalar w_i per block (init --san_gate_init, 0 in their code: g = 0.5) and
LayerDrop (--san_layers every_second: l(i) = L, L-2, ... down to 1 or 2, in increasing order;
all: l(i) = 1 .. L). Intra-modal SAN: one per modality. Inter-modal SAN (text+vision), their
form: m_0 = 0, m_i = A'_i(m_(i-1) + q_i * V_l(i) + (1 - q_i) * T_l(i)), q_i = sigmoid(u_i / 0.1).
The item vector: each SAN's output through a head GELU(Linear(H, d)) + --dnn_layers MLP (the
two-stage head of morec.models.towers.FeatureTower), the three heads fused by GELU(Linear(3d, d))
(their com_dense over [cv; text; mm]).

Where this code differs from theirs, deliberately:
- cached states: the pooled vector of each layer as the two-stage cache pools it (--pooling: [CLS]
  for BERT, the masked mean for MiniLM / OPT; ViT-MAE's [CLS]) where theirs is always [CLS];
  the last layer's state is the encoder's last_hidden_state (e.g. after ViT-MAE's final norm).
- s_0 = H_0 and blocks on l(i) >= 1 (their `remove_first TRUE` variant); their default starts
  from s_0 = 0 with one more block on the embedding output.
- LayerDrop counts from the top, so the last layer is always a block's input (for an even L:
  2, 4, ..., L, as their 1,3,...,11 + 1; an odd L: 1, 3, ..., L).
- the adapter width r is --san_dim (64 in their script) and its activation GELU (theirs ReLU by
  default); init as theirs: both projections N(0, 0.01), biases 0 (each block is near identity).
- the heads: GELU(Linear) + MLP as every two-stage head here, where theirs is Linear(H, H) then
  the encoder's Linear(H, d); the inter SAN reads the vision states through a Linear(Hv, Ht)
  when the widths differ, and pairs text block i with the vision layer at the same relative
  depth when the depths differ (theirs: two 12-layer, 768-wide backbones).
- the SAN trains with --lr / --l2_weight (AdamW), gates included; theirs uses separate adapter
  learning rates and no weight decay.
With every gate open to the backbone (w large) and every adapter the identity (W_up = 0, b_up = 0)
the text SAN returns the cached last layer, and the tower equals the `--ts_layers last` head
(tests/test_side_network.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from morec.models.sasrec import init_xavier
from morec.models.towers import FeatureTower, ItemTower, mlp

GATE_TEMPERATURE = 0.1          # g = sigmoid(w / 0.1), as in their code
SAN_LAYERS = ("every_second", "all")


def san_block_layers(num_layers: int, mode: str) -> tuple[int, ...]:
    """The backbone layers l(1) < ... < l(B) the SAN blocks read (1-based; 0 is the embedding
    output, the initial state): every_second keeps L, L-2, ... >= 1 (LayerDrop); all keeps 1 .. L."""
    if mode not in SAN_LAYERS:
        raise ValueError(f"san_layers must be one of {SAN_LAYERS}, got {mode!r}")
    if num_layers < 1:
        raise ValueError(f"a side network needs at least one backbone layer, got {num_layers}")
    step = 2 if mode == "every_second" else 1
    return tuple(range(num_layers, 0, -step))[::-1]


class SideAdapter(nn.Module):
    """One SAN block's adapter: x + W_up GELU(W_down x) (down-projection to `bottleneck`,
    activation, up-projection, residual); both projections N(0, 0.01), biases 0."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down, self.up = nn.Linear(width, bottleneck), nn.Linear(bottleneck, width)
        for linear in (self.down, self.up):
            nn.init.normal_(linear.weight, std=1e-2)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # (K, H) -> (K, H)
        return x + self.up(F.gelu(self.down(x)))


class SideAdapterNetwork(nn.Module):
    """Intra-modal SAN over one modality's cached states (K, J, H) -> (K, H) (module docstring)."""

    def __init__(self, width: int, layers: tuple[int, ...], bottleneck: int, gate_init: float = 0.0):
        super().__init__()
        self.layers = layers                                                  # l(i), (B,)
        self.gate_weights = nn.Parameter(torch.full((len(layers),), float(gate_init)))   # w (B,)
        self.adapters = nn.ModuleList(SideAdapter(width, bottleneck) for _ in layers)

    def gates(self) -> torch.Tensor:
        """g = sigmoid(w / 0.1): (B,) the share of the backbone state in each block's input."""
        return torch.sigmoid(self.gate_weights / GATE_TEMPERATURE)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (K, J, H) the cached states of K items -> s_B (K, H)."""
        gates = self.gates().to(hidden.dtype)
        state = hidden[:, 0]                                                  # s_0 = H_0
        for gate, layer, adapter in zip(gates, self.layers, self.adapters):
            state = adapter(gate * hidden[:, layer] + (1 - gate) * state)
        return state


class InterModalSAN(nn.Module):
    """Inter-modal SAN over both modalities' states: m_i = A_i(m_(i-1) + q_i V_l'(i) + (1 - q_i)
    T_l(i)), m_0 = 0 (their form); the vision states are mapped to the text width when they differ."""

    def __init__(self, text_width: int, vision_width: int, text_layers: tuple[int, ...],
                 vision_layers: tuple[int, ...], bottleneck: int, gate_init: float = 0.0):
        super().__init__()
        self.text_layers, self.vision_layers = text_layers, vision_layers
        self.vision_in = nn.Identity() if vision_width == text_width else nn.Linear(vision_width, text_width)
        self.gate_weights = nn.Parameter(torch.full((len(text_layers),), float(gate_init)))   # u (B,)
        self.adapters = nn.ModuleList(SideAdapter(text_width, bottleneck) for _ in text_layers)

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_weights / GATE_TEMPERATURE)

    def forward(self, text: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
        """text (K, Jt, Ht), vision (K, Jv, Hv) -> m_B (K, Ht)."""
        gates = self.gates().to(text.dtype)
        state = torch.zeros_like(text[:, 0])
        for i, adapter in enumerate(self.adapters):
            mixed = gates[i] * self.vision_in(vision[:, self.vision_layers[i]]) + (1 - gates[i]) * text[:, self.text_layers[i]]
            state = adapter(state + mixed)
        return state


def paired_layers(text_layers: tuple[int, ...], text_depth: int, vision_depth: int) -> tuple[int, ...]:
    """The vision layer at the same relative depth as each text block's layer (identity when the
    depths agree): round(l * Lv / Lt), at least 1."""
    return tuple(max(1, round(layer * vision_depth / text_depth)) for layer in text_layers)


class SideNetworkTower(FeatureTower):
    """IISAN for one modality (text or vision): the intra-modal SAN over the cached per-layer
    states (N+1, J, H), then the two-stage head GELU(Linear(H, d)) + MLP. The backbone is not
    part of the model: only the SAN and the head train."""

    def __init__(self, features: torch.Tensor, dim: int, dnn_layers: int = 0, dropout: float = 0.0,
                 san_layers: str = "every_second", bottleneck: int = 64, gate_init: float = 0.0):
        if features.ndim != 3:
            raise ValueError(f"a side network needs (N+1, layers, H) features, got shape {tuple(features.shape)}")
        super().__init__(features, dim, dnn_layers, dropout)
        layers = san_block_layers(features.shape[1] - 1, san_layers)
        self.san = SideAdapterNetwork(features.shape[-1], layers, bottleneck, gate_init)

    def item_features(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (K,) -> the SAN's output (K, H)."""
        return self.san(self.features[ids].float())


class SideNetworkMultiModalTower(ItemTower):
    """IISAN for text + vision: the intra-modal SANs (text, vision), the inter-modal SAN over
    both, a head per SAN (GELU(Linear(H, d)) + MLP) and their fusion GELU(Linear(3d, d))."""

    def __init__(self, text: torch.Tensor, vision: torch.Tensor, dim: int, dnn_layers: int = 0,
                 dropout: float = 0.0, san_layers: str = "every_second", bottleneck: int = 64,
                 gate_init: float = 0.0):
        super().__init__()
        self.dim = dim
        self.text = SideNetworkTower(text, dim, dnn_layers, dropout, san_layers, bottleneck, gate_init)
        self.vision = SideNetworkTower(vision, dim, dnn_layers, dropout, san_layers, bottleneck, gate_init)
        text_layers = self.text.san.layers
        vision_layers = paired_layers(text_layers, text.shape[1] - 1, vision.shape[1] - 1)
        self.inter = InterModalSAN(text.shape[-1], vision.shape[-1], text_layers, vision_layers, bottleneck, gate_init)
        self.inter_fc = nn.Linear(text.shape[-1], dim)
        self.inter_mlp = mlp(dim, dnn_layers, dropout)
        self.fuse = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU())
        for module in (self.inter_fc, self.inter_mlp, self.fuse):
            init_xavier(module)
        if isinstance(self.inter.vision_in, nn.Linear):
            init_xavier(self.inter.vision_in)

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        """(K,) ids -> (K, d): [text head; vision head; inter head] fused."""
        text = self.text.features[ids].float()                                # (K, Jt, Ht)
        vision = self.vision.features[ids].float()                            # (K, Jv, Hv)
        e_text = self.text.encode_chunk(ids)
        e_vision = self.vision.encode_chunk(ids)
        e_inter = self.inter_mlp(F.gelu(self.inter_fc(self.inter(text, vision))))
        return self.fuse(torch.cat([e_text, e_vision, e_inter], -1))


def encode_image_layers(encoder: nn.Module, kind: str, pixels: torch.Tensor) -> torch.Tensor:
    """pixels (K, 3, S, S) -> (K, num_layers + 1, H): the [CLS] state of every layer of a ViT-MAE
    encoder (the embedding output first, the last layer as its last_hidden_state, i.e. exactly
    morec.models.vision.encode_images' feature), for the vision side network. Swin and ResNet
    stages differ in width: refused."""
    from morec.errors import InputError
    from morec.models.vision import check_image_size
    if kind != "vit_mae":
        raise InputError(f"--side_network iisan caches every layer of a ViT-style vision encoder (equal widths); "
                         f"this {kind} encoder's stages differ in width: use a ViT-MAE encoder (--cv_model_load)")
    embeddings = encoder.embeddings.patch_embeddings
    check_image_size(encoder, kind, tuple(pixels.shape[-2:]))
    noise = torch.arange(embeddings.num_patches, device=pixels.device, dtype=torch.float32)   # keep patch order
    out = encoder(pixel_values=pixels, noise=noise.expand(len(pixels), -1), output_hidden_states=True)
    layers = (*out.hidden_states[:-1], out.last_hidden_state)                 # L+1 x (K, 1+P, H)
    return torch.stack([h[:, 0] for h in layers], 1)                          # (K, L+1, H)
