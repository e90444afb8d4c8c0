"""MISSRec (Wang et al., ACM MM 2023, "Pre-training and Transferring Multi-modal Interest-aware
Sequence Representation for Recommendation", Sec. 3; public code gimpong/MM23-MISSRec), the
fine-tuning model on our two-stage (cached, frozen) item features, with or without item IDs.

Item side. Each item has one token per modality m (text, image: the cached features through
the usual two-stage head, morec.models.towers.FeatureTower, d wide) and, with --missrec_ids, an
ID embedding. Its candidate vector is the concatenation of the L2-normalised parts,
c_i = [n(e_i^text); n(e_i^image); n(e_i^id)]  (P*d wide, P parts), independent of the user.

User side, for every prefix x_1..x_t of a (left-padded) history:
1. interests: the M*t modality tokens of the prefix are clustered into at most K interest
   tokens (K = --missrec_interests) by DPC-KNN (Du et al. 2016, as in their cluster_utils.
   cluster_dpc_knn: local density from the `LOCAL_SIZE` nearest tokens, distance to the nearest
   denser token, the K highest density x distance scores are the centres, every token joins its
   nearest centre). The assignment runs under no_grad; an interest token is the mean of its
   members, so gradients reach the item heads through it.
2. a Transformer encoder (`blocks` post-LN blocks, no positions) reads the interest tokens;
3. a decoder reads the item tokens z_s = sum_m e_s^m (+ e_s^id) + p_s (their "add" sequence
   fusion), LayerNorm, dropout: per block causal self-attention, cross-attention of position t to
   the encoded interests of prefix t, feed-forward (post-LN);
4. h_t = the decoder's output at t; the user's scoring vector is
   u_t = [a_1(h_t) n(h_t); ...; a_P(h_t) n(h_t)] / tau,
   so <u_t, c_i> = sum_p a_p(h_t) cos(h_t, e_i^p) / tau (the modality logits of their code,
   fused with user-adaptive weights a(h) = softmax(W h + b); --missrec_fusion static: a = b's
   softmax, their fixed (1/3 id, 2/3 modalities) weights). Training (in-batch debiased softmax,
   BCE) and full ranking use these dot products unchanged.
The state at t reads items 1..t only (tests/test_missrec.py checks it).

Where this differs from their code, on purpose:
- interests are clustered per prefix and per user (vectorised over the batch, every forward
  pass), not once per epoch over the whole catalogue with k-means (their trainer) with the
  interest ids looked up per item; our form keeps the state at t a function of items 1..t and
  needs no hook in the training loop. K is a per-prefix count, not a catalogue ratio (0.5).
- dynamic fusion: their weights softmax_m(w * <u, n(e^m)>) depend on the (user, item) logit, so
  full ranking cannot be one matmul; ours depend on the user only (a(h)), which keeps the score
  a dot product of a user vector and a user-independent item vector. At initialisation (W = 0)
  both equal the static fusion. With IDs their static weights are kept as the prior b.
- with one decoder block (their n_layers 2 = 1 encoder + 1 decoder layer) the state at t equals
  their output for the prefix-t sample; with more blocks a lower block at s < t attends the
  interests of prefix s (one pass serves every position, as SASRec's).
- the item heads are our two-stage heads (GELU(Linear) + dnn_layers), not a plain Linear
  adaptor; feed-forward width 4d with ReLU in the encoder (our SASRec block) and GELU in the
  decoder; Xavier initialisation (SPEC) instead of N(0, 0.02); no final encoder/decoder norm.
- left out: the interest orthogonality regulariser (weight 1e-4 there), the empty-feature
  masks (every item here has its features), and their pre-training (the sequence-item and
  sequence-sequence contrastive losses on source domains). --init_from copies a MISSRec source
  run's encoder, fusion and feature heads (never the ID table: morec.transfer's docstring;
  tests/test_missrec_transfer.py).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from morec.errors import InputError
from morec.models.recommender import Recommender, SequentialRecommender
from morec.models.sasrec import LN_EPS, MultiHeadSelfAttention, TransformerBlock, init_xavier
from morec.models.towers import IdTower, ItemTower

LOCAL_SIZE = 5                 # DPC-KNN neighbours for the local density (their cluster_dpc_knn default)
CLUSTER_ELEMS = 2 ** 24        # (batch x prefixes x tokens x tokens) held at once while clustering
FUSIONS = ("user", "static")


# ----------------------------------------------------------------------------- interest clustering

@torch.no_grad()
def dpc_knn_assign(tokens: torch.Tensor, valid: torch.Tensor, num_interests: int,
                   local_size: int = LOCAL_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-KNN clustering of each group of tokens (their cluster_utils.cluster_dpc_knn, batched).

    tokens (B, T, D); valid (B, Q, T): Q groups per row, each a subset of its row's tokens.
    Returns weights (B, Q, K, T), each cluster's members weighted 1/size (rows of empty or
    missing clusters zero), and ok (B, Q, K): the cluster has members. K = min(num_interests, T);
    a group of n < K tokens gives n clusters."""
    batch, length, width = tokens.shape
    groups = valid.shape[1]
    dist = torch.cdist(tokens.float(), tokens.float()) / width ** 0.5                 # (B, T, T)
    dist = dist[:, None].expand(batch, groups, length, length)                        # (B, Q, T, T)
    pair = valid[..., :, None] & valid[..., None, :]
    masked = dist.masked_fill(~pair, float("inf"))
    count = valid.sum(-1)                                                             # (B, Q)
    k = min(local_size, length)
    nearest = masked.topk(k, dim=-1, largest=False).values                            # (B, Q, T, k)
    within = torch.arange(k, device=tokens.device) < count[..., None, None]           # (B, Q, 1, k)
    squared = torch.where(within, nearest.square(), torch.zeros_like(nearest))
    density = torch.exp(-squared.sum(-1) / within.sum(-1).clamp_min(1))               # (B, Q, T)
    denser = (density[..., None, :] > density[..., :, None]) & pair                   # j denser than i
    farthest = dist.masked_fill(~pair, 0.0).amax((-1, -2))                            # (B, Q)
    parent = dist.masked_fill(~denser, float("inf")).amin(-1)                         # (B, Q, T)
    parent = torch.where(torch.isinf(parent), farthest[..., None], parent)
    score = (parent * density).masked_fill(~valid, float("-inf"))
    top, centres = score.topk(min(num_interests, length), dim=-1)                     # (B, Q, K)
    interests = centres.shape[-1]
    to_centre = dist.gather(2, centres[..., None].expand(-1, -1, -1, length))         # (B, Q, K, T)
    to_centre = to_centre.masked_fill(~torch.isfinite(top)[..., None], float("inf"))
    assign = to_centre.argmin(2)                                                      # (B, Q, T)
    assign.scatter_(-1, centres, torch.arange(interests, device=tokens.device).expand_as(centres))
    member = F.one_hot(assign, interests).transpose(-1, -2).bool() & valid[..., None, :]   # (B, Q, K, T)
    size = member.sum(-1)                                                             # (B, Q, K)
    return member.float() / size.clamp_min(1)[..., None], size > 0


def prefix_interests(tokens: torch.Tensor, positions: torch.Tensor, real: torch.Tensor,
                     num_interests: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The interest tokens of every prefix of each sequence.

    tokens (B, T, d): the modality tokens, token j at sequence position positions[j] (T,);
    real (B, T): token of a real item. Prefix t holds the real tokens at positions <= t.
    Returns interests (B, L, K, d) (differentiable means of the members) and ok (B, L, K);
    L = positions.max() + 1. Clustered in chunks of prefixes (CLUSTER_ELEMS)."""
    batch, length = tokens.shape[:2]
    num_prefixes = int(positions.max()) + 1
    step = max(1, CLUSTER_ELEMS // max(1, batch * length * length))
    weights, oks = [], []
    for start in range(0, num_prefixes, step):
        ends = torch.arange(start, min(start + step, num_prefixes), device=tokens.device)   # (q,)
        valid = real[:, None, :] & (positions[None, None, :] <= ends[None, :, None])        # (B, q, T)
        weight, ok = dpc_knn_assign(tokens, valid, num_interests)
        weights.append(weight)
        oks.append(ok)
    weight = torch.cat(weights, 1).to(tokens.dtype)                                   # (B, L, K, T)
    return torch.einsum("blkt,btd->blkd", weight, tokens), torch.cat(oks, 1)


# ----------------------------------------------------------------------------- encoder-decoder

class CrossAttention(nn.Module):
    """Each query position attends its own set of memory tokens: q (N, d), memory (N, K, d)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(dim, dim, bias=False) for _ in range(4))

    def forward(self, query: torch.Tensor, memory: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """query (N, d), memory (N, K, d), ok (N, K) with at least one True per row -> (N, d)."""
        rows, size, dim = memory.shape
        def split(t):  # (N, n, d) -> (N, heads, n, d_head)
            return t.view(rows, t.shape[1], self.heads, dim // self.heads).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            split(self.w_q(query)[:, None]), split(self.w_k(memory)), split(self.w_v(memory)),
            attn_mask=ok[:, None, None, :], dropout_p=self.dropout if self.training else 0.0)
        return self.w_o(out.transpose(1, 2).reshape(rows, dim))


class InterestDecoderBlock(nn.Module):
    """Post-LN decoder block: causal self-attention, cross-attention of position t to the
    interests of prefix t, feed-forward (GELU)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.self_attention = MultiHeadSelfAttention(dim, heads, dropout)
        self.cross_attention = CrossAttention(dim, heads, dropout)
        self.w_1, self.w_2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim, eps=LN_EPS) for _ in range(3))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, memory: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        """x (B, L, d); allowed (B, 1, L, L); memory (B, L, K, d); ok (B, L, K)."""
        batch, length, dim = x.shape
        x = self.norms[0](x + self.dropout(self.self_attention(x, allowed)))
        cross = self.cross_attention(x.reshape(-1, dim), memory.flatten(0, 1), ok.flatten(0, 1))
        x = self.norms[1](x + self.dropout(cross.view(batch, length, dim)))
        return self.norms[2](x + self.dropout(self.w_2(F.gelu(self.w_1(x)))))


class InterestEncoderDecoder(nn.Module):
    """Steps 1-4 of the module docstring: modality tokens of a left-padded window -> h (B, L, d)."""

    def __init__(self, dim: int, max_seq_len: int, blocks: int, heads: int, dropout: float, num_interests: int):
        super().__init__()
        if not 1 <= num_interests <= max_seq_len:
            raise InputError(f"--missrec_interests must be in 1 .. max_seq_len ({max_seq_len}), got {num_interests}")
        self.num_interests = num_interests
        self.position = nn.Embedding(max_seq_len, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)
        self.interest_blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout) for _ in range(blocks))
        self.decoder_blocks = nn.ModuleList(InterestDecoderBlock(dim, heads, dropout) for _ in range(blocks))
        self.register_buffer("causal", torch.tril(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool)),
                             persistent=False)
        init_xavier(self)

    def encode_interests(self, interests: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """interests (B, L, K, d), ok (B, L, K) -> encoded (B, L, K, d), ok with slot 0 opened in
        an empty prefix (a padded position; its state is never used) so no row is fully masked."""
        ok = ok.clone()
        ok[..., 0] |= ~ok.any(-1)
        batch, length, size, dim = interests.shape
        x = interests.reshape(-1, size, dim)                                          # (B*L, K, d)
        eye = torch.eye(size, dtype=torch.bool, device=x.device)
        allowed = ok.reshape(-1, 1, 1, size) | eye                                    # (B*L, 1, K, K)
        for block in self.interest_blocks:
            x = block(x, allowed)
        return x.view(batch, length, size, dim), ok

    def forward(self, modality_tokens: torch.Tensor, id_tokens: torch.Tensor | None,
                real: torch.Tensor) -> torch.Tensor:
        """modality_tokens (B, L, M, d); id_tokens (B, L, d) or None; real (B, L). -> (B, L, d)."""
        batch, length, modalities, dim = modality_tokens.shape
        positions = torch.arange(length, device=real.device).repeat_interleave(modalities)      # (L*M,)
        interests, ok = prefix_interests(modality_tokens.reshape(batch, length * modalities, dim), positions,
                                         real.repeat_interleave(modalities, dim=1), self.num_interests)
        memory, ok = self.encode_interests(interests, ok)
        items = modality_tokens.sum(2) + (0 if id_tokens is None else id_tokens)
        x = self.dropout(self.norm(items + self.position.weight[:length]))
        eye = torch.eye(length, dtype=torch.bool, device=x.device)
        allowed = (self.causal[:length, :length] & real[:, None, None, :]) | eye     # (B, 1, L, L)
        for block in self.decoder_blocks:
            x = block(x, allowed, memory, ok)
        return x


# ----------------------------------------------------------------------------- item side and model

class MissRecItemTower(ItemTower):
    """The parts of an item (modality heads over cached features, optionally the ID table):
    candidate vectors [n(e^1); ...; n(e^P)] (K, P*d) through the usual ItemTower path, and the
    raw tokens of a sequence for the user side (`tokens`)."""

    def __init__(self, modality_heads: dict[str, ItemTower], id_table: IdTower | None, dim: int):
        super().__init__()
        self.modalities = nn.ModuleDict(modality_heads)
        self.id_table = id_table
        self.parts = len(modality_heads) + (id_table is not None)
        self.part_dim, self.dim = dim, self.parts * dim

    def part_vectors(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """ids (...) -> [(..., d) per part], padding zero; modalities first, the ID last."""
        parts = [head.encode_items(ids) for head in self.modalities.values()]
        return parts + ([self.id_table.encode_items(ids)] if self.id_table is not None else [])

    def encode_chunk(self, ids: torch.Tensor, pixels=None) -> torch.Tensor:
        return torch.cat([F.normalize(part, dim=-1) for part in self.part_vectors(ids)], -1)    # (K, P*d)

    def tokens(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ids (B, L) -> modality tokens (B, L, M, d) and ID tokens (B, L, d) or None."""
        parts = self.part_vectors(ids)
        id_tokens = parts.pop() if self.id_table is not None else None
        return torch.stack(parts, 2), id_tokens


class MissRecRecommender(SequentialRecommender):
    """MISSRec on the SequentialRecommender's batches and losses: states (B, L, P*d) are the
    scoring vectors u_t of the module docstring; item vectors the tower's candidate vectors."""

    def __init__(self, item_tower: MissRecItemTower, num_items: int, loss: str, popularity: torch.Tensor,
                 max_seq_len: int, blocks: int, heads: int, dropout: float, num_interests: int,
                 fusion: str, temperature: float):
        Recommender.__init__(self, item_tower, num_items, loss, popularity)   # not SASRec's encoder
        if fusion not in FUSIONS:
            raise InputError(f"--missrec_fusion must be one of {FUSIONS}, got {fusion!r}")
        dim = item_tower.part_dim
        if dim % heads:
            raise InputError(f"embedding_dim {dim} is not divisible by num_attention_heads {heads}")
        self.encoder = InterestEncoderDecoder(dim, max_seq_len, blocks, heads, dropout, num_interests)
        self.fusion, self.temperature = fusion, temperature
        self.part_logits = nn.Linear(dim, item_tower.parts)                      # a(h) = softmax(W h + b)
        with torch.no_grad():
            self.part_logits.weight.zero_()
            self.part_logits.bias.copy_(prior_weights(len(item_tower.modalities), item_tower.id_table is not None).log())
        self.part_logits.requires_grad_(fusion == "user")

    def part_weights(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> a (..., P), summing to 1."""
        return torch.softmax(self.part_logits(h), -1)

    def states(self, input_vecs: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, L) -> scoring vectors (B, L, P*d); `input_vecs` (candidate vectors) unused:
        the user side reads the raw tokens."""
        modality_tokens, id_tokens = self.item_tower.tokens(input_ids)
        h = F.normalize(self.encoder(modality_tokens, id_tokens, input_ids != 0), dim=-1)   # (B, L, d)
        weights = self.part_weights(h)                                                  # (B, L, P)
        return (weights[..., None] * h[..., None, :]).flatten(-2) / self.temperature

    def user_vectors(self, input_ids: torch.Tensor, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L) left-padded windows -> u at the last position (B, P*d)."""
        return self.states(None, input_ids)[:, -1]


def prior_weights(modalities: int, with_ids: bool) -> torch.Tensor:
    """Their static fusion: modalities share equally; with IDs, ID 1/3 and the modalities 2/3."""
    if not with_ids:
        return torch.full((modalities,), 1.0 / modalities)
    return torch.cat([torch.full((modalities,), 2.0 / (3 * modalities)), torch.tensor([1.0 / 3])])


def build_missrec(spec, num_items: int, popularity: torch.Tensor, item_inputs: dict | None) -> MissRecRecommender:
    """The MISSRec recommender of a ModelSpec (morec.models.build.build_model): two-stage heads
    over the cached features of the item tower's modalities, the ID table with spec.missrec.ids."""
    from morec.models.build import feature_head
    tower, options, item_inputs = spec.tower, spec.missrec, item_inputs or {}
    if tower.kind not in ("text", "vision", "text+vision") or not tower.two_stage:
        raise InputError("--model missrec reads cached item features: set --item_tower text, vision or text+vision "
                         "with --two_stage true")
    if tower.fusion != "none":
        raise InputError(f"--model missrec adds item IDs itself: use --missrec_ids true instead of --fusion {tower.fusion}")
    keys = {"text": ("text", "features"), "vision": ("vision", "features"),
            "text+vision": ("text", "features", "vision", "vision_features")}[tower.kind]
    heads = {}
    for modality, key in zip(keys[::2], keys[1::2]):
        if key not in item_inputs:
            raise InputError(f"--model missrec: the cached {modality} features are missing (--two_stage true)")
        heads[modality] = feature_head(tower, item_inputs[key], tower.ts_layers if modality == "text" else "last")
    id_table = IdTower(num_items, tower.dim) if options.ids else None
    return MissRecRecommender(MissRecItemTower(heads, id_table, tower.dim), num_items, spec.loss.kind, popularity,
                              spec.max_seq_len, spec.blocks, spec.heads, spec.drop_rate, options.interests,
                              options.fusion, options.temperature)
