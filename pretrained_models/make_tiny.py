"""Build tiny, randomly initialised text and vision encoders for offline tests and smoke runs.

Each is a normal HuggingFace folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json) whose tokenizer is trained on the ml-100k titles with the `tokenizers`
library: WordPiece for BERT, byte-level BPE for RoBERTa, OPT, Llama and Qwen2, with each family's
special tokens and template ([CLS] x [SEP]; <s> x </s>; </s> x; Llama <s> x with no pad token, as
the real Llama tokenizers; Qwen2 x alone, pad = <|endoftext|>). The weights are random: these
folders exercise the code paths of the real encoders (loading, CLS / mean / last-token pooling,
freezing, PEFT, caching), not quality. The decoders (random_tiny_llama, random_tiny_qwen2) are
built only when asked for (`make_decoders`, or `--decoders` on the command line).

Vision: random_tiny_resnet18 (a randomly initialised torchvision ResNet-18 state dict,
resnet18.pth, + config.json {"arch": "resnet18"}: small enough as is, "tiny" by being untrained),
random_tiny_swin (SwinModel: patch 4, embed_dim 16, depths [1, 1], window 4) and random_tiny_vit_mae
(ViTMAEModel: patch 8, hidden 32, 2 layers, mask_ratio 0), the HF ones saved with save_pretrained.
`--image_size` (default 64) sets the image size of the HF configs: ViT-MAE only accepts that size
(Swin pads others, but is meant for it); ResNet accepts any size >= 32 (>= 64 to train on batches
of one image, whose last stage is otherwise 1 x 1 for BatchNorm).

    python pretrained_models/make_tiny.py     # -> pretrained_models/random_tiny_{bert,roberta,opt}/
                                              #    and random_tiny_{resnet18,swin,vit_mae}/
    python pretrained_models/make_tiny.py --decoders   # also random_tiny_{llama,qwen2}/
    python pretrained_models/make_tiny.py --out /tmp/enc --hidden 64 --layers 4 --image_size 32
then e.g. ``python bce_text/main-end2end/train_bert_base.py --bert_model_load random_tiny_bert``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent
TITLES = HERE.parent / "dataset" / "ml-100k" / "items.tsv"
FAMILIES = ("bert", "roberta", "opt")
DECODERS = ("llama", "qwen2")
VISION = ("resnet18", "swin", "vit_mae")


def ml100k_titles(path: Path = TITLES) -> list[str]:
    """Lower-cased titles and abstracts (year + genres) of the ml-100k items."""
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        texts.extend(p.lower() for p in parts[1:3] if p)
    return texts


def _wordpiece(texts: list[str], vocab_size: int):
    """A WordPiece tokenizer whose vocabulary is a pure function of `texts`: the special tokens, every
    character (alone and as a "##" continuation), then the most frequent words (ties by spelling) up
    to `vocab_size`. The `tokenizers` WordPieceTrainer is not used: it breaks ties between equally
    frequent merges in hash order, so each process built another vocabulary, and the tiny BERT
    mapped the same titles to other ids in every test session (results of tests that train it
    changed from one session to the next)."""
    from collections import Counter
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(word for text in texts
                    for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in words for char in word})
    vocab = special + chars + [f"##{char}" for char in chars]
    taken = set(vocab)
    frequent = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if word not in taken]
    vocab += frequent[:max(0, vocab_size - len(vocab))]
    tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
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


def make_tiny_llama(out: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = 2,
                    heads: int = 2, vocab_size: int = 1000, seed: int = 0) -> Path:
    """A random LlamaModel (RMSNorm, rotary, SwiGLU, no biases); the tokenizer prepends <s> and,
    like the real Llama tokenizers, has no pad token (the text tower sets it to </s>)."""
    import torch
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaModel
    tok = _byte_bpe(texts or ml100k_titles(), vocab_size, ["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    model = LlamaModel(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=heads, num_key_value_heads=heads,
                                   intermediate_size=2 * hidden, max_position_embeddings=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=None))
    return _save(Path(out), tok, specials, model)


def make_tiny_qwen2(out: Path, texts: list[str] | None = None, hidden: int = 32, layers: int = 2,
                    heads: int = 2, vocab_size: int = 1000, seed: int = 0, kv_heads: int | None = None,
                    intermediate: int | None = None, model_vocab_size: int | None = None,
                    max_positions: int = 128) -> Path:
    """A random Qwen2Model (RMSNorm, rotary, q/k/v biases); the tokenizer adds no special token
    (an empty text has no token at all) and pads with <|endoftext|>, as the real Qwen2 ones.
    kv_heads / intermediate / model_vocab_size (embedding rows, >= the tokenizer's) default to
    heads / 2 x hidden / the tokenizer's vocabulary (see make_qwen2_half_billion)."""
    import torch
    from transformers import Qwen2Config, Qwen2Model
    tok = _byte_bpe(texts or ml100k_titles(), vocab_size, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    specials = dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    model = Qwen2Model(Qwen2Config(vocab_size=max(model_vocab_size or 0, tok.get_vocab_size()), hidden_size=hidden,
                                   num_hidden_layers=layers, num_attention_heads=heads,
                                   num_key_value_heads=kv_heads or heads, intermediate_size=intermediate or 2 * hidden,
                                   max_position_embeddings=max_positions, bos_token_id=None, eos_token_id=0,
                                   pad_token_id=0))
    return _save(Path(out), tok, specials, model)


def make_qwen2_half_billion(out: Path, seed: int = 0) -> Path:
    """A random decoder of Qwen2-0.5B's size (hidden 896, 24 layers, 14 heads / 2 key-value heads,
    MLP 4864, 151,936 embedding rows: 494M parameters, 2 GB in fp32) with the small test
    tokenizer: what one GPU step of an LLM item tower costs, without downloading one
    (scripts/bench_gpu.py --towers llm_0.5b)."""
    return make_tiny_qwen2(out, hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864,
                           model_vocab_size=151936, max_positions=512, seed=seed)


def make_tiny_resnet(out: Path, arch: str = "resnet18", seed: int = 0) -> Path:
    """`out`/config.json {"arch": arch} + `out`/<arch>.pth, a random torchvision state dict."""
    import json
    import torch
    import torchvision
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"arch": arch}) + "\n", encoding="utf-8")
    torch.save(getattr(torchvision.models, arch)(weights=None).state_dict(), out / f"{arch}.pth")
    return out


def make_tiny_swin(out: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A random 2-stage SwinModel (1 block each, hidden 16 -> 32) for image_size x image_size."""
    import torch
    import transformers
    from transformers import SwinConfig, SwinModel
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = SwinModel(SwinConfig(image_size=image_size, patch_size=4, embed_dim=16, depths=[1, 1],
                                 num_heads=[1, 2], window_size=4, mlp_ratio=2.0))
    model.save_pretrained(str(out))
    return Path(out)


def make_tiny_vit_mae(out: Path, image_size: int = 64, seed: int = 0) -> Path:
    """A random ViTMAEModel (hidden 32, 2 layers, patch 8, mask_ratio 0) for image_size x image_size."""
    import torch
    import transformers
    from transformers import ViTMAEConfig, ViTMAEModel
    transformers.utils.logging.disable_progress_bar()
    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of the patch size 8, got {image_size}")
    torch.manual_seed(seed)
    model = ViTMAEModel(ViTMAEConfig(image_size=image_size, patch_size=8, hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     mask_ratio=0.0))
    model.save_pretrained(str(out))
    return Path(out)


MAKERS = {"bert": make_tiny_bert, "roberta": make_tiny_roberta, "opt": make_tiny_opt,
          "llama": make_tiny_llama, "qwen2": make_tiny_qwen2}


def make_decoders(out_root: Path, **kwargs) -> dict[str, Path]:
    """random_tiny_{llama,qwen2} (built with `kwargs`) under `out_root`."""
    return {family: MAKERS[family](Path(out_root) / f"random_tiny_{family}", **kwargs) for family in DECODERS}


def make_all(out_root: Path, image_size: int = 64, **kwargs) -> dict[str, Path]:
    """random_tiny_{bert,roberta,opt} (built with `kwargs`) and random_tiny_{resnet18,swin,vit_mae}
    (for `image_size`) under `out_root`."""
    root = Path(out_root)
    made = {family: MAKERS[family](root / f"random_tiny_{family}", **kwargs) for family in FAMILIES}
    made["resnet18"] = make_tiny_resnet(root / "random_tiny_resnet18", "resnet18")
    made["swin"] = make_tiny_swin(root / "random_tiny_swin", image_size)
    made["vit_mae"] = make_tiny_vit_mae(root / "random_tiny_vit_mae", image_size)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write random_tiny_* into")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--vocab_size", type=int, default=1000)
    parser.add_argument("--image_size", type=int, default=64,
                        help="image size of the tiny Swin / ViT-MAE configs: ViT-MAE accepts only this "
                             "size, Swin is meant for it (pads others); ResNet accepts any size >= 32")
    parser.add_argument("--decoders", action="store_true", help="also build random_tiny_{llama,qwen2}")
    args = parser.parse_args()
    for family, path in make_all(args.out, image_size=args.image_size, hidden=args.hidden,
                                 layers=args.layers, heads=args.heads, vocab_size=args.vocab_size).items():
        print(f"{family}: {path}")
    if args.decoders:
        for family, path in make_decoders(args.out, hidden=args.hidden, layers=args.layers, heads=args.heads,
                                          vocab_size=args.vocab_size).items():
            print(f"{family}: {path}")


if __name__ == "__main__":
    main()
