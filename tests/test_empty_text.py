"""A text tower that would see no text is refused up front: an items file without
titles, or --news_attributes abstract where there are none, made every item the same vector."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from morec.config import make_config
from morec.errors import InputError
from morec.features import item_tower_inputs
from morec.resolve import item_input_spec
from text_helpers import TINY, ml100k, tiny_encoders


def config(tmp_path, **values):
    return make_config({"item_tower": "text", "bert_model_load": TINY["bert"], "pretrained_dir": str(tiny_encoders()),
                        "cache_dir": str(tmp_path / "cache"), "num_words_title": 8, "num_words_abstract": 8,
                        **values})


def ml100k_without(attribute: str, first: int | None = None):
    """ml-100k with `attribute` emptied for every item (or for the first `first` items)."""
    data = dataclasses.replace(ml100k())                # a copy: ml100k() is shared between tests
    rows = data.items[1:]
    cut = len(rows) if first is None else first
    data.items = [None] + [dataclasses.replace(row, **{attribute: ""}) if i < cut else row
                           for i, row in enumerate(rows)]
    return data


@pytest.mark.parametrize("attribute, news_attributes", [("title", "title"), ("abstract", "abstract"),
                                                        ("abstract", "title,abstract")])
def test_an_attribute_no_item_has_is_refused(tmp_path, attribute, news_attributes):
    cfg = config(tmp_path, news_attributes=news_attributes)
    with pytest.raises(InputError, match=f"all 1409 items have an empty {attribute} in .*items.tsv"):
        item_tower_inputs(item_input_spec(cfg), ml100k_without(attribute), torch.device("cpu"))


def test_items_without_any_text_are_counted_and_refused(tmp_path):
    data = ml100k_without("title", first=3)
    with pytest.raises(InputError, match=r"3 of 1409 items have an empty title in .*items.tsv \('1', '2', '3'\)"):
        item_tower_inputs(item_input_spec(config(tmp_path)), data, torch.device("cpu"))
    with pytest.raises(InputError, match=r"3 of 1409 items have an empty title and abstract"):
        item_tower_inputs(item_input_spec(config(tmp_path, news_attributes="title,abstract")), _both_empty(3),
                          torch.device("cpu"))


def _both_empty(n: int):
    data = ml100k_without("title", first=n)
    data.items = [None] + [dataclasses.replace(row, abstract="") if i < n else row
                           for i, row in enumerate(data.items[1:])]
    return data


def test_partly_empty_text_is_accepted_when_something_tells_items_apart(tmp_path, caplog):
    cfg = config(tmp_path, news_attributes="title,abstract")               # 3 items lack a title only
    assert len(item_tower_inputs(item_input_spec(cfg), ml100k_without("title", first=3),
                                 torch.device("cpu"))["tokens"]) == 2
    with caplog.at_level(logging.WARNING, logger="morec"):                  # ID fusion: a warning
        inputs = item_tower_inputs(item_input_spec(config(tmp_path, fusion="add")), ml100k_without("title", first=3),
                                   torch.device("cpu"))
    assert len(inputs["tokens"]) == 1
    assert any("3 of 1409 items have an empty title" in r.getMessage() for r in caplog.records)
