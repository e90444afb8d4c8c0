"""The checks of a run's values (`validate`): one rule per Config field (`RULES`), then the
combinations that are fine alone but not together; every problem in one InputError, each naming
the parameter, its value and what it must be (morec.config holds the values themselves)."""
from __future__ import annotations

import math

from morec.config import MISSREC_FIELDS, TOWER_MODALITIES, Config, cached_modalities
from morec.errors import InputError


def _at_least(low: int):
    return lambda value: None if value >= low else f"must be at least {low}"


def _positive_finite(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number > 0"


def _non_negative_finite(value: float) -> str | None:
    return None if math.isfinite(value) and value >= 0 else "must be a finite number >= 0"


def _one_of(*choices: str):
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _any(_value) -> None:
    return None


def _folder_name(value: str) -> str | None:
    if value in ("", ".", "..") or "/" in value or "\0" in value:
        return "must be a plain folder name (no '/')"
    return None


def _dataset_name(value: str) -> str | None:
    if _folder_name(value) is None:
        return None
    parent, _, name = value.rstrip("/").rpartition("/")
    if name and not parent and value.endswith("/"):        # a shell's tab completion adds the slash
        return f"must be a folder name, not a path: drop the trailing slash (--dataset {name})"
    hint = f": pass --root_data_dir {parent} --dataset {name}" if parent and name else ""
    return f"must be a folder name under --root_data_dir, not a path{hint}"


def _label(value: str) -> str | None:
    return None if value == "" else _folder_name(value)


def _drop_rate(value: float) -> str | None:
    return None if 0 <= value < 1 else "must be in [0, 1) (the probability of dropping a unit)"


def _dropout_or_unset(value: float) -> str | None:
    return None if value == -1 or 0 <= value < 1 else "must be -1 (the encoder config's) or in [0, 1)"


def _seed(value: int) -> str | None:
    return None if 0 <= value < 2 ** 48 else "must be in 0 .. 2**48 - 1"


def _device(value: str) -> str | None:
    kind, colon, index = value.partition(":")
    if value in ("auto", "cpu", "cuda") or (kind == "cuda" and colon and index.isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def _endpoint(value: str) -> str | None:
    host, colon, port = value.rpartition(":")
    return None if value == "" or (host and colon and port.isdigit()) else "must be HOST:PORT"


def _lr_or_unset(value: float) -> str | None:
    return None if value == -1 or (math.isfinite(value) and value >= 0) else "must be -1 (use fine_tune_lr) or >= 0"


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1] (the fraction of users whose train part is used)"


def _module_names(value: str) -> str | None:
    parts = [part.strip() for part in value.split(",")]
    if value and (not all(parts) or any(" " in part for part in parts)):
        return "must be module names separated by commas, e.g. q_proj,v_proj (empty: peft's defaults)"
    return None


def _news_attributes(value: str) -> str | None:
    parts = [part.strip() for part in value.split(",")]
    if not all(parts) or len(set(parts)) != len(parts) or not set(parts) <= {"title", "abstract"}:
        return "must be title, abstract or title,abstract"
    return None


# One rule per Config field (tests/test_config.py checks that none lacks one): a function of the
# value returning what is wrong, or None. Types are checked by make_config / validate first.
RULES = {
    "root_data_dir": _not_empty, "dataset": _dataset_name, "behaviors": _not_empty, "news": _not_empty,
    "max_seq_len": _at_least(1), "min_seq_len": _at_least(3), "warm_min_count": _at_least(0),
    "model": _one_of("sasrec", "gru4rec", "nextitnet", "dssm", "missrec"), "item_tower": _one_of("id", "text", "vision", "text+vision"),
    "embedding_dim": _at_least(1), "transformer_block": _at_least(1), "num_attention_heads": _at_least(1),
    "dnn_layers": _at_least(0), "drop_rate": _drop_rate,
    "bert_model_load": _folder_name, "pretrained_dir": _not_empty, "news_attributes": _news_attributes,
    "num_words_title": _at_least(1), "num_words_abstract": _at_least(1), "unescape_text": _any, "freeze_paras_before": _at_least(0),
    "trainable_layers": _at_least(-1), "gradient_checkpointing": _any, "two_stage": _any,
    "fusion": _one_of("none", "add", "cat"), "mo_dnn_layers": _at_least(0), "ts_layers": _one_of("last", "all"),
    "ts_mix_lr": _positive_finite,
    "cv_model_load": _folder_name, "image_lmdb": _not_empty, "image_size": _at_least(1),
    "image_norm": _one_of("imagenet", "half"), "freeze_bn_stats": _any, "encoder_dropout": _dropout_or_unset,
    "loss": _one_of("inbatch", "bce"), "neg_num": _at_least(1), "gather_negatives": _any,
    "extra_negatives": _at_least(0), "filter_false_negatives": _any, "inbatch_chunk": _at_least(0),
    "batch_size": _at_least(1), "epoch": _at_least(1), "lr": _positive_finite, "l2_weight": _non_negative_finite,
    "fine_tune_lr": _non_negative_finite, "fine_tune_l2_weight": _non_negative_finite,
    "max_grad_norm": _non_negative_finite, "lr_schedule": _one_of("none", "cosine"), "warmup_steps": _at_least(0),
    "accumulation_steps": _at_least(1), "skip_nonfinite": _any,
    "patience": _at_least(1), "tie_break_ndcg": _any, "seed": _seed,
    "eval_batch_size": _at_least(1), "eval_chunk_elems": _at_least(1), "cold_start_count": _at_least(0),
    "label": _label, "runs_dir": _any, "resume": _any, "overwrite": _any, "device": _device,
    "nproc_per_node": _at_least(1), "nnodes": _at_least(1), "rdzv_endpoint": _endpoint, "amp": _any,
    "amp_dtype": _one_of("bf16", "fp16"), "cpu_amp": _any, "amp_fp32_loss": _any, "compile_model": _any, "deterministic": _any, "sync_bn": _any,
    "num_workers": _at_least(0),
    "progress": _any, "log_every": _at_least(0), "cache_dir": _not_empty, "prepared_data": _any,
    # fields of the evaluation and data branches (checked when present)
    "mm_fusion": _one_of("sum", "concat", "gate"), "cv_fine_tune_lr": _lr_or_unset,
    "mm_cached_branch": _one_of("none", "text", "vision"),
    "init_from": _any, "freeze_user_encoder": _any, "train_user_fraction": _fraction,
    "ties": _one_of("expected", "optimistic", "pessimistic"), "repeat_targets": _one_of("miss", "rank", "skip"), "eval_amp": _any, "dedup_items": _any,
    "pooling": _one_of("auto", "cls", "mean", "last"), "peft": _one_of("none", "lora", "ia3", "bitfit", "ln"),
    "lora_r": _at_least(1), "lora_alpha": _at_least(1), "lora_dropout": _drop_rate, "lora_targets": _module_names,
    "peft_layers": _at_least(-1), "cache_frozen_layers": _any, "layer_cache_dtype": _one_of("float16", "bfloat16", "float32"),
}
# --- IISAN side network (morec/models/side_network.py) ---
RULES.update({"side_network": _one_of("none", "iisan"), "san_layers": _one_of("every_second", "all"),
              "san_dim": _at_least(1),
              "san_gate_init": lambda value: None if math.isfinite(value) else "must be a finite number"})


def _combination_problems(cfg: Config) -> list[str]:
    """What is wrong with values that are fine alone but not together."""
    problems = []
    problems += _missrec_problems(cfg)                                   # MISSRec
    if cfg.model == "sasrec" and cfg.embedding_dim % max(cfg.num_attention_heads, 1):
        problems.append(f"--embedding_dim {cfg.embedding_dim} must be divisible by "
                        f"--num_attention_heads {cfg.num_attention_heads}")
    if cfg.item_tower == "id" and (cfg.two_stage or cfg.fusion != "none"):
        problems.append("--two_stage and --fusion need a modality item tower: set --item_tower text or vision")
    if cfg.mm_cached_branch != "none" and (cfg.item_tower != "text+vision" or cfg.two_stage):
        problems.append(f"--mm_cached_branch {cfg.mm_cached_branch} makes one branch of --item_tower text+vision "
                        "two-stage while the other trains end to end: it needs --item_tower text+vision and "
                        "--two_stage false (--two_stage true caches both branches)")
    if cfg.freeze_user_encoder and cfg.model == "dssm":
        problems.append("--freeze_user_encoder needs a sequential model (sasrec, gru4rec, nextitnet): DSSM's user "
                        "tower is a user-ID table, which must train")
    if cfg.train_user_fraction < 1 and cfg.model == "dssm":
        problems.append("--train_user_fraction < 1 needs a sequential model (sasrec, gru4rec, nextitnet): DSSM's "
                        "batches index users by row")
    for name, on in (("inbatch_chunk", cfg.inbatch_chunk > 0), ("extra_negatives", cfg.extra_negatives > 0),
                     ("filter_false_negatives", cfg.filter_false_negatives)):
        if on and cfg.loss != "inbatch":
            problems.append(f"--{name} belongs to the in-batch loss; with --loss {cfg.loss} leave it unset "
                            f"(or set --loss inbatch)")
    if cfg.inbatch_chunk > 0 and cfg.nproc_per_node * cfg.nnodes > 1:
        problems.append("--inbatch_chunk (gradient caching) runs in one process: use it without "
                        "--nproc_per_node / --nnodes, or set --inbatch_chunk 0")
    problems += _peft_problems(cfg) + _layer_cache_problems(cfg)
    problems += _side_network_problems(cfg)
    unset = Config()
    for name in ("encoder_dropout", "freeze_bn_stats"):
        if cfg.two_stage and getattr(cfg, name) != getattr(unset, name):
            problems.append(f"--{name} {getattr(cfg, name)} sets how an encoder trains, but with --two_stage the "
                            "encoder runs once in eval mode and never trains: drop it (or set --two_stage false)")
    if cfg.sync_bn and ("vision" not in TOWER_MODALITIES.get(cfg.item_tower, ()) or "vision" in cached_modalities(cfg)):
        problems.append("--sync_bn synchronises the BatchNorm of a vision encoder trained end to end under DDP: it "
                        "needs --item_tower vision or text+vision without a cached (two-stage) vision branch")
    if cfg.ts_layers == "all" and not (cfg.two_stage or "text" in cached_modalities(cfg)):
        problems.append("--ts_layers all caches every text encoder layer for the two-stage head: add --two_stage "
                        "true, or --mm_cached_branch text with --item_tower text+vision (end to end, the encoder "
                        "runs in training and --ts_layers does not apply)")
    elif cfg.ts_layers == "all" and cfg.item_tower == "vision" and cfg.side_network == "none":
        problems.append("--ts_layers all is for text encoders (equal-width layers); a vision encoder's stages "
                        "differ in width: use --ts_layers last with --item_tower vision")
    if cfg.cpu_amp and not (cfg.amp and cfg.amp_dtype == "bf16"):
        problems.append(f"--cpu_amp true trains under bf16 autocast on the CPU, but --amp is {cfg.amp} and "
                        f"--amp_dtype {cfg.amp_dtype}: use --amp true --amp_dtype bf16 with it, or drop --cpu_amp")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume and --overwrite contradict each other: pass one of them")
    if cfg.nnodes > 1 and not cfg.rdzv_endpoint:
        problems.append("--nnodes > 1 needs --rdzv_endpoint HOST:PORT (the same on every node)")
    return problems


# --- MISSRec ---
RULES.update({"missrec_interests": _at_least(1), "missrec_ids": _any, "missrec_fusion": _one_of("user", "static"),
              "missrec_temperature": _positive_finite})


def _missrec_problems(cfg: Config) -> list[str]:
    """--model missrec reads cached features (two-stage) of a modality tower, adds IDs itself,
    and forms at most max_seq_len interests; its fields do nothing for another model."""
    if cfg.model != "missrec":
        unset = Config()
        given = [f"--{name} {str(getattr(cfg, name)).lower()}" for name in sorted(MISSREC_FIELDS)
                 if getattr(cfg, name) != getattr(unset, name)]
        return [f"{', '.join(given)} only apply with --model missrec (it is {cfg.model})"] if given else []
    problems = []
    if cfg.item_tower == "id" or not cfg.two_stage:
        problems.append("--model missrec reads cached item features: set --item_tower text, vision or text+vision "
                        "and --two_stage true")
    if cfg.fusion != "none":
        problems.append(f"--model missrec adds item IDs itself: use --missrec_ids true instead of --fusion {cfg.fusion}")
    if cfg.missrec_interests > cfg.max_seq_len:
        problems.append(f"--missrec_interests {cfg.missrec_interests} exceeds --max_seq_len {cfg.max_seq_len}: "
                        "a prefix has at most max_seq_len items; set it to 1 .. max_seq_len")
    if cfg.embedding_dim % max(cfg.num_attention_heads, 1):
        problems.append(f"--embedding_dim {cfg.embedding_dim} must be divisible by "
                        f"--num_attention_heads {cfg.num_attention_heads}")
    return problems
# --- end MISSRec ---


def _peft_problems(cfg: Config) -> list[str]:
    """--peft adapts the encoder of a text tower trained end to end, and sets alone what trains."""
    problems = []
    if cfg.peft != "none" and cfg.item_tower != "text":
        problems.append(f"--peft {cfg.peft} adapts a text encoder, but --item_tower is {cfg.item_tower}: "
                        "set --item_tower text, or --peft none")
    elif cfg.peft != "none" and cfg.two_stage:
        problems.append(f"--peft {cfg.peft} with --two_stage: the two-stage encoder is frozen and never "
                        "runs in training; drop one of them")
    clashing = [(name, getattr(cfg, name), off) for name, off, on in
                (("freeze_paras_before", 0, cfg.freeze_paras_before > 0), ("trainable_layers", -1, cfg.trainable_layers >= 0))
                if on]
    if cfg.peft != "none" and clashing:
        problems.append(f"--peft {cfg.peft} decides which encoder parameters train, so "
                        f"{' and '.join(f'--{name} {value}' for name, value, _ in clashing)} must be off: override with "
                        f"{' '.join(f'--{name} {off}' for name, _, off in clashing)} (or use --peft none)")
    lora_only = _changed_from_default(cfg, ("lora_r", "lora_alpha", "lora_dropout"))
    if lora_only and cfg.peft != "lora":
        problems.append(f"{', '.join(lora_only)} only apply with --peft lora (it is {cfg.peft})")
    if cfg.peft_layers != -1 and cfg.peft == "none":
        problems.append(f"--peft_layers {cfg.peft_layers} restricts --peft to the top blocks, but --peft is none: "
                        "set --peft, or --trainable_layers instead")
    if cfg.lora_targets and cfg.peft not in ("lora", "ia3"):
        problems.append(f"--lora_targets {cfg.lora_targets} only applies with --peft lora or ia3 (it is {cfg.peft})")
    return problems


def _changed_from_default(cfg: Config, names: tuple[str, ...]) -> list[str]:
    """"--NAME VALUE" for each of `names` that `cfg` sets away from its default."""
    defaults = Config()
    return [f"--{name} {getattr(cfg, name)}" for name in names if getattr(cfg, name) != getattr(defaults, name)]


def _side_network_problems(cfg: Config) -> list[str]:
    """--side_network iisan reads the all-layer cache of a two-stage modality tower; its values
    (san_*) only apply with it."""
    problems = []
    if cfg.side_network != "none" and cfg.item_tower == "id":
        problems.append(f"--side_network {cfg.side_network} adapts a modality encoder's cached layers: set "
                        "--item_tower text, vision or text+vision (with --two_stage true --ts_layers all)")
    elif cfg.side_network != "none" and not (cfg.two_stage and cfg.ts_layers == "all"):
        problems.append(f"--side_network {cfg.side_network} reads every layer's cached state and the encoder never "
                        f"runs in training: it needs --two_stage true and --ts_layers all (they are --two_stage "
                        f"{str(cfg.two_stage).lower()} --ts_layers {cfg.ts_layers})")
    only = _changed_from_default(cfg, ("san_layers", "san_dim", "san_gate_init"))
    if only and cfg.side_network == "none":
        problems.append(f"{', '.join(only)} only apply with --side_network iisan (it is none)")
    return problems


def _layer_cache_problems(cfg: Config) -> list[str]:
    """--cache_frozen_layers needs a text tower end to end whose top k >= 1 blocks alone train."""
    top = cfg.peft_layers if cfg.peft != "none" else cfg.trainable_layers
    if not cfg.cache_frozen_layers:
        return [] if cfg.layer_cache_dtype == "float16" else [
            f"--layer_cache_dtype {cfg.layer_cache_dtype} only applies with --cache_frozen_layers true"]
    if cfg.item_tower != "text" or cfg.two_stage:
        return [f"--cache_frozen_layers caches the frozen blocks of a text encoder trained end to end: it needs "
                f"--item_tower text and --two_stage false (it is --item_tower {cfg.item_tower}, --two_stage "
                f"{str(cfg.two_stage).lower()})"]
    if top < 1:
        which = f"--peft_layers {cfg.peft_layers}" if cfg.peft != "none" else f"--trainable_layers {cfg.trainable_layers}"
        how = "--peft_layers k" if cfg.peft != "none" else "--trainable_layers k"
        return [f"--cache_frozen_layers caches the states entering the top k trained blocks, but {which} sets no "
                f"top blocks: set {how} with k >= 1 (or --cache_frozen_layers false)"]
    if cfg.freeze_paras_before > 0:
        return ["--cache_frozen_layers: the top k blocks decide what trains; set --freeze_paras_before 0"]
    return []


def validate(cfg: Config) -> None:
    """Refuse values that make no sense, before anything is written: every problem
    of `cfg` in one InputError, each naming the parameter, its value and what it must be."""
    defaults = Config().to_dict()
    problems = []
    for name, value in cfg.to_dict().items():
        expected = type(defaults[name])
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(f"--{name} {value!r} should be a {expected.__name__}")
            continue
        problem = RULES.get(name, _any)(value)
        if problem:
            problems.append(f"--{name} {value!r} {problem}")
    if not problems:
        problems = _combination_problems(cfg)
    if problems:
        raise InputError("; ".join(problems))
