"""Marketplace titles (HTML entities, stray spaces) in text towers: `--unescape_text` (default
true) decodes and collapses them; ml-100k has none, so its tokens, caches and labels stay as
they were. A title that is only whitespace or only HTML entities is refused, naming the file,
the line and the fix."""
import logging

import pytest
import torch

from conftest import write_dataset
from morec.config import Config, make_config, run_label
from morec.data.empty_text import empty_kind
from morec.data.text import clean_text, item_texts, item_tokens
from morec.errors import InputError
from morec.features import item_tower_inputs
from morec.parts import load_data
from morec.resolve import item_input_spec
from text_helpers import TINY, ml100k, tiny_encoders

CPU = torch.device("cpu")


def test_clean_text_decodes_entities_and_collapses_spaces():
    assert clean_text("Data Hold &amp; Error  Code ") == "Data Hold & Error Code"
    assert clean_text(" 5&quot; Caliper&nbsp;&#39;Pro&#x27;\t") == "5\" Caliper 'Pro'"
    assert clean_text("Toy Story (1995)") == "Toy Story (1995)"


def test_ml100k_texts_are_unchanged_so_tokens_and_caches_stay(tmp_path):
    """No ml-100k title or abstract holds an entity or a stray space: the default (true) gives the
    texts, tokens and token-cache file of before (false)."""
    data = ml100k()
    rows = [row for row in data.items[1:]]
    assert all(clean_text(row.title) == row.title and clean_text(row.abstract) == row.abstract for row in rows)
    for attribute in ("title", "abstract"):
        assert item_texts(data.items, attribute, clean=True) == item_texts(data.items, attribute, clean=False)
    from morec.models.text import load_tokenizer
    tok = load_tokenizer(tiny_encoders() / TINY["bert"])
    cleaned = item_tokens(data.items, tok, [("title", 12)], tmp_path, "ml-100k", clean=True)[0]
    files = sorted((tmp_path / "tokens").iterdir())
    raw = item_tokens(data.items, tok, [("title", 12)], tmp_path, "ml-100k", clean=False)[0]
    assert sorted((tmp_path / "tokens").iterdir()) == files and len(files) == 1       # one shared cache file
    assert (cleaned.input_ids == raw.input_ids).all()


def test_the_option_is_a_text_value_off_the_label_by_default():
    text = Config(item_tower="text")
    assert Config().unescape_text is True
    assert run_label(text) == run_label(Config(item_tower="text", unescape_text=True))
    assert run_label(Config(item_tower="text", unescape_text=False)) != run_label(text)
    assert run_label(Config(unescape_text=False)) == run_label(Config())               # ID runs ignore it


def shop(tmp_path, titles: list[str]):
    """A data set 'shop' of items p1.. with `titles`, three users over all of them."""
    names = [f"p{k}" for k in range(1, len(titles) + 1)]
    write_dataset(tmp_path / "shop", [f"{n}\t{t}" for n, t in zip(names, titles)],
                  [f"u{k}\t" + " ".join(names[k:] + names[:k]) for k in range(3)])
    return tmp_path


def text_config(root, **values):
    return make_config({"root_data_dir": str(root), "dataset": "shop", "item_tower": "text", "max_seq_len": 3,
                        "min_seq_len": 3, "bert_model_load": TINY["bert"], "pretrained_dir": str(tiny_encoders()),
                        "cache_dir": str(root / "cache"), "num_words_title": 24, **values})   # wide enough: the
    # tiny BERT spells words it does not know letter by letter


def test_entities_reach_the_encoder_only_with_unescape_text_false(tmp_path):
    root = shop(tmp_path, ["Gauge &amp; Tester", "Nema17  Stepper Motor ", "Lab Scale", "Pipette"])
    tokens = {}
    for clean in (True, False):
        cfg = text_config(root, unescape_text=clean)
        tokens[clean] = item_tower_inputs(item_input_spec(cfg), load_data(cfg), CPU)["tokens"][0][0]
    from morec.data.text import tokenize_texts
    from morec.models.text import load_tokenizer
    tok = load_tokenizer(tiny_encoders() / TINY["bert"])
    ids = {text: torch.from_numpy(tokenize_texts(tok, [text], 24)[0][0]) for text in ("gauge & tester", "gauge &amp; tester")}
    assert (tokens[True][1] == ids["gauge & tester"]).all() and (tokens[False][1] == ids["gauge &amp; tester"]).all()
    assert (tokens[True][1] != tokens[False][1]).any()
    assert (tokens[True][3:] == tokens[False][3:]).all()                   # clean titles: the same tokens


@pytest.mark.parametrize("title, kind", [("   ", "only whitespace"), ("&amp;&nbsp;", "only HTML entities"),
                                         ("&nbsp;", "only HTML entities")])
def test_a_title_of_only_whitespace_or_entities_is_refused_with_file_line_and_fix(tmp_path, title, kind):
    root = shop(tmp_path, ["Gauge", "Motor", title, "Pipette"])
    cfg = text_config(root)
    with pytest.raises(InputError) as err:
        item_tower_inputs(item_input_spec(cfg), load_data(cfg), CPU)
    message = str(err.value)
    assert f"items.tsv, line 3: item 'p3' has a title that is {kind}" in message
    assert "Give these items a real title" in message and "--fusion add or cat" in message


def test_with_id_fusion_an_empty_title_is_a_warning(tmp_path, caplog):
    root = shop(tmp_path, ["Gauge", "Motor", "&amp;", "Pipette"])
    with caplog.at_level(logging.WARNING, logger="morec"):
        item_tower_inputs(item_input_spec(text_config(root, fusion="add")), load_data(text_config(root)), CPU)
    assert any("line 3: item 'p3' has a title that is only HTML entities" in r.getMessage() for r in caplog.records)


def test_empty_kinds():
    assert [empty_kind(t) for t in ("", " \t", "&amp;", "&#38;&#x26;", "&nbsp;", "R&D", "a &amp; b")] == \
        ["missing", "only whitespace", "only HTML entities", "only HTML entities", "only HTML entities", None, None]
