"""Floating-point operations of a transformer encoder's step, for the benchmarks' FLOP floors.

A multiply-add counts as 2 FLOPs (as torch.utils.flop_counter does). Only the matmuls of the
transformer blocks are counted (what dominates: the embeddings are lookups, LayerNorm, softmax,
GELU and the pooling are O(T h) per token). One block on a sequence of T tokens, hidden h,
intermediate (feed-forward) size i:
    Q, K, V projections 3 x 2 T h^2, scores Q K^T 2 T^2 h, weights x V 2 T^2 h,
    output projection 2 T h^2, feed-forward 2 x 2 T h i
    forward = 8 T h^2 + 4 T^2 h + 4 T h i.
Backward: a matmul whose operands both need gradients costs twice its forward (one matmul per
operand); where the block's input needs no gradient (the lowest trainable block above frozen
blocks or frozen embeddings) its Q, K, V projections compute only the weight gradient (6 T h^2
instead of 12 T h^2). Frozen blocks below the trainable ones run forward only.
"""
from __future__ import annotations


def block_forward_flops(seq_len: int, hidden: int, intermediate: int) -> int:
    """FLOPs of one transformer block's matmuls on one sequence of `seq_len` tokens, forward."""
    t, h, i = seq_len, hidden, intermediate
    return 8 * t * h * h + 4 * t * t * h + 4 * t * h * i


def encoder_step_flops(num_sequences: int, seq_len: int, hidden: int, intermediate: int,
                       num_layers: int, trainable_layers: int = -1, backward: bool = True) -> int:
    """Forward (+ backward) FLOPs of an encoder of `num_layers` blocks on a (num_sequences,
    seq_len) batch of tokens (padding included: it is computed).

    trainable_layers: -1 = every block and the embeddings train (the lowest block's input needs
    a gradient); n >= 0 = only the top n blocks train (embeddings frozen); 0 = frozen encoder."""
    trainable = num_layers if trainable_layers < 0 else min(trainable_layers, num_layers)
    forward = block_forward_flops(seq_len, hidden, intermediate)
    total = num_layers * forward
    if backward and trainable:
        total += trainable * 2 * forward
        if trainable_layers >= 0:                      # lowest trainable block: no input gradient
            total -= 6 * seq_len * hidden * hidden
    return num_sequences * total


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an (m, k) @ (k, n) matmul."""
    return 2 * m * k * n
