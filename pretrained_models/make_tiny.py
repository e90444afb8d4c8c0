"""Build tiny, randomly initialised BERT / RoBERTa / OPT encoders for offline tests and smoke runs.

Each is a normal HuggingFace folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) whose tokenizer is trained on the ml-100k titles with the `tokenizers`
library: WordPiece for BERT, byte-level BPE for RoBERTa and OPT, with each family's special tokens
and template ([CLS] x [SEP]; <s> x </s>; </s> x). The weights are random: these folders exercise
the code paths of the real encoders (loading, CLS / mean pooling, freezing, caching), not quality.

    python pretrained_models/make_tiny.py                   # -> pretrained_models/random_tiny_{bert,roberta,opt}/
    python pretrained_models/make_tiny.py --out /tmp/enc --hidden 64 --layers 4
then e.g. ``python bce_text/main-end2end/train_bert_base.py --bert_model_load random_tiny_bert``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
TITLES = HERE.parent / "dataset" / "ml-100k" / "items.tsv"
FAMILIES = ("bert", "roberta", "opt")


def ml100k_titles(path: Path = TITLES) -> list[str]:
    """Lower-cased titles and abstracts (year + genres) of the ml-100k items."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        texts.extend(p.lower() for p in parts[1:3] if p)
    return texts


def _wordpiece(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok, dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                     mask_token="[MASK]")


def _byte_bpe(texts: list[str], vocab_size: int, special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _save(out: Path, tokenizer, specials: dict, model) -> Path:
    import transformers
    from transformers import PreTrainedTokenizerFast
    transformers.utils.logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials).save_pretrained(str(out))
    model.save_pretrained(str(out))
    return out


def make_tiny_bert(out: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = 2,
                   heads: int = 2, vocab_size: int = 1000, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel
    tok, specials = _wordpiece(texts or ml100k_titles(), vocab_size)
    torch.manual_seed(seed)
    model = BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads, intermediate_size=2 * hidden,
                                 max_position_embeddings=128, pad_token_id=tok.token_to_id("[PAD]")))
    return _save(Path(out), tok, specials, model)


def make_tiny_roberta(out: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = 2,
                      heads: int = 2, vocab_size: int = 1000, seed: int = 0) -> Path:
    import torch
    from tokenizers import processors
    from transformers import RobertaConfig, RobertaModel
    tok = _byte_bpe(texts or ml100k_titles(), vocab_size, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    torch.manual_seed(seed)
    model = RobertaModel(RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden,
                                       num_hidden_layers=layers, num_attention_heads=heads,
                                       intermediate_size=2 * hidden, max_position_embeddings=130,
                                       pad_token_id=1, bos_token_id=0, eos_token_id=2))
    return _save(Path(out), tok, specials, model)


def make_tiny_opt(out: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = 2,
                  heads: int = 2, vocab_size: int = 1000, seed: int = 0) -> Path:
    import torch
    from tokenizers import processors
    from transformers import OPTConfig, OPTModel
    tok = _byte_bpe(texts or ml100k_titles(), vocab_size, ["<s>", "<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", pair="</s> $A </s> $B",
                                                       special_tokens=[("</s>", 2)])
    specials = dict(bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    torch.manual_seed(seed)
    model = OPTModel(OPTConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, ffn_dim=2 * hidden, max_position_embeddings=128,
                               word_embed_proj_dim=hidden, pad_token_id=1, bos_token_id=2, eos_token_id=2))
    return _save(Path(out), tok, specials, model)


MAKERS = {"bert": make_tiny_bert, "roberta": make_tiny_roberta, "opt": make_tiny_opt}


def make_all(out_root: Path, **kwargs) -> dict[str, Path]:
    """random_tiny_bert / random_tiny_roberta / random_tiny_opt under `out_root`."""
    return {family: MAKERS[family](Path(out_root) / f"random_tiny_{family}", **kwargs) for family in FAMILIES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write random_tiny_* into")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=1000)
    args = parser.parse_args()
    for family, path in make_all(args.out, hidden=args.hidden, layers=args.layers, heads=args.heads,
                                 vocab_size=args.vocab_size).items():
        print(f"{family}: {path}")


if __name__ == "__main__":
    main()
