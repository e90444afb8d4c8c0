"""One path encodes the catalogue (ItemTower.all_item_vectors): evaluation and the two-stage text
feature extraction go through it, and it gives what encoding every id in one call gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from morec.config import Config
from morec.distributed import World
from morec.features import extract_text_features, text_tokens
from morec.models.text import encode_pooled, encode_pooled_layers, load_text_encoder, pooling_of
from morec.models.towers import IdTower
from morec.resolve import item_input_spec
from morec.train import catalogue_vectors
from test_text_tower import CPU, build, config
from text_helpers import TINY, ml100k, tiny_encoders


def test_id_tower_catalogue_equals_every_id_in_one_call():
    torch.manual_seed(0)
    tower = IdTower(50, 8, mlp_layers=1, dropout=0.1).eval()
    every = torch.arange(51)
    vecs = tower.all_item_vectors(50)
    assert vecs.shape == (51, 8) and torch.all(vecs[0] == 0)
    assert torch.equal(vecs, tower(every))
    with torch.no_grad():
        assert torch.equal(vecs[1:], tower.encode_chunk(every[1:]))            # one chunk, no dedup
    assert torch.equal(tower.all_item_vectors(50, torch.tensor([3, 0, 7])), vecs[[3, 0, 7]])


def test_text_tower_catalogue_equals_every_id_in_one_call(tmp_path):
    """A tiny BERT tower built from config: the chunked, length-ordered catalogue equals one pass over
    every item (padding masked, so only float rounding differs), and evaluation reads the same."""
    model = build(config(tmp_path, news_attributes="title,abstract", num_words_abstract=8)).eval()
    tower, num_items = model.item_tower, ml100k().num_items
    vecs = tower.all_item_vectors(num_items)
    with torch.no_grad():
        one_call = tower.encode_chunk(torch.arange(1, num_items + 1))             # every id in one pass
    assert vecs.shape == (num_items + 1, 16) and torch.all(vecs[0] == 0)
    torch.testing.assert_close(vecs[1:], one_call, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vecs, tower(torch.arange(num_items + 1)))
    assert torch.equal(catalogue_vectors(model, num_items, World(), CPU, Config()), vecs)


def old_extract_text_features(encoder, pooling, tokens, device, batch_size=256, all_layers=False):
    """The extraction as it was written before it used the tower path (its own chunk order)."""
    encode = encode_pooled_layers if all_layers else encode_pooled
    encoder.eval().to(device)
    out = None
    for ids, mask in tokens:
        order = torch.argsort(mask[1:].sum(1), stable=True) + 1
        for chunk in order.split(batch_size):
            chunk_mask = mask[chunk]
            width = max(int(chunk_mask.sum(1).max()), 1)
            pooled = encode(encoder, pooling, ids[chunk, :width].to(device),
                            chunk_mask[:, :width].to(device)).float().cpu()
            if out is None:
                out = torch.zeros(tokens[0][0].shape[0], *pooled.shape[1:])
            out[chunk] += pooled / len(tokens)
    return out.numpy()


@pytest.mark.parametrize("attributes,all_layers", [("title", False), ("title,abstract", False),
                                                    ("title", True)])
def test_feature_extraction_through_the_tower_is_identical(attributes, all_layers, tmp_path):
    cfg = config(tmp_path, news_attributes=attributes, num_words_abstract=8)
    tokens = text_tokens(item_input_spec(cfg), ml100k())
    encoder = load_text_encoder(tiny_encoders() / TINY["bert"])
    pooling = pooling_of(encoder.config, "auto")
    with torch.no_grad():
        expected = old_extract_text_features(encoder, pooling, tokens, CPU, 100, all_layers)
    got = extract_text_features(encoder, pooling, tokens, CPU, 100, all_layers)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_pixel_tower_catalogue_reads_the_pixels_it_is_handed():
    """A pixel tower encodes the (ids, pixels) chunks `read_pixels` yields, padding zero; without
    them it says what to pass."""
    from test_vision_pipeline import MeanColourTower
    torch.manual_seed(0)
    tower = MeanColourTower().eval()
    pixels = torch.rand(21, 3, 8, 8)                                             # row i: item i's image

    def read_pixels(ids):
        return [(part, pixels[part]) for part in ids.split(6)]
    vecs = tower.all_item_vectors(20, read_pixels=read_pixels)
    assert vecs.shape == (21, 4) and torch.all(vecs[0] == 0)
    with torch.no_grad():
        torch.testing.assert_close(vecs[1:], tower.encode_pixels(pixels[1:]))
    with pytest.raises(ValueError, match="read_pixels"):
        tower.all_item_vectors(20)
