"""Transfer across domains (PMMRec / NineRec's pre-train -> fine-tune): a run starts
from another run's best checkpoint (`--init_from RUN_DIR`).

What is loaded: every tensor of the new model whose name and shape the source checkpoint holds
(the user encoder, the modality tower(s), fusion layers), except the ID tables: item ids (and
DSSM's user ids) of another data set mean nothing here, so `IdTower` tables and DSSM's user table
keep their fresh initialisation, as does any tensor the source lacks or holds in another shape.
The log lists both sets. The source must have the same encoders and the same way of running them
(`TransferSpec.must_agree`, from morec.resolve.same_encoder_values: model, item tower, two-stage
or not (per branch for text+vision), embedding size, encoder folders):
otherwise the refusal comes before anything is written. A source that is still training (its
run lock held, morec.runlock.source_lock) is refused too, and the run's own folder is never a
source (morec.runs.refuse_own_source). Two-stage: what transfers is the user
encoder and the head(s) over the frozen features; the features themselves are never in a
checkpoint (a non-persistent buffer), so the target always reads its own items' features.
`--freeze_user_encoder`: the user encoder's parameters do not train (linear-probe style).

MISSRec (`--model missrec`, morec/models/missrec.py; the source must be a MISSRec run with the
same `--missrec_interests`, as K shapes what its encoder learnt though no tensor holds it):
loaded are the interest encoder and the decoder (`encoder.*`: interest blocks, decoder blocks,
position embedding, norm), the fusion `part_logits.*` (when both runs have the same parts, i.e.
both with or both without `--missrec_ids`) and each modality's head over the frozen features
(`item_tower.modalities.<text|vision>.*`). The clustering has no parameters (DPC-KNN reruns on
the target's tokens). Fresh: the ID table `item_tower.id_table.*` (always) and `part_logits.*`
when the parts differ (e.g. pre-trained without IDs, fine-tuned with them, as in their paper).
`--freeze_user_encoder` freezes `encoder.*` only.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from morec.atomic_io import write_json_atomic
from morec.checkpoint import load_checkpoint, require_entries
from morec.errors import InputError
from morec.runlock import source_lock
from morec.specs import TransferSpec

log = logging.getLogger("morec")

KEY = "init_source"           # config.json: the source run's label, folder and data identity


def check_source(spec: TransferSpec) -> dict:
    """The source run's config.json, after checking that it has a best checkpoint and the same
    encoders as this run (`spec.must_agree`); one InputError otherwise (raised before the new
    run writes anything)."""
    folder = spec.run_dir
    config_file, best = folder / "config.json", folder / "checkpoint_best.pt"
    if not best.is_file():
        raise InputError(f"--init_from {spec.given}: {best} not found; give a run folder whose training "
                         "finished at least one epoch")
    with source_lock(folder, f"--init_from {spec.given}"):      # a run still training there: refused
        pass
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"--init_from {spec.given}: {config_file} cannot be read ({err}); "
                         "give a run folder of this code") from None
    # a field newer than the source run counts as its default there
    differ = [f"{name} {saved.get(name, default)!r} there, {here!r} here"
              for name, here, default in spec.must_agree if saved.get(name, default) != here]
    if differ:
        missrec = " (MISSRec: and missrec_interests)" if "missrec_interests" in {n for n, _, _ in spec.must_agree} else ""
        raise InputError(f"--init_from {spec.given}: the source run's encoders differ ({'; '.join(differ)}); "
                         f"start from a run with the same model, item tower, encoder(s) and embedding_dim{missrec}")
    return saved


def id_table_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the tables indexed by item or user ids (IdTower, DSSM's user table)."""
    from morec.models.dssm import DSSMUserTower
    from morec.models.towers import IdTower
    names = set()
    for prefix, module in model.named_modules():
        if isinstance(module, IdTower) or isinstance(module, DSSMUserTower):
            table = module.embedding
            names |= {f"{prefix}.embedding.{name}" for name, _ in table.named_parameters()}
    return names


def in_target_layout(source: dict, source_fusion: str, fusion: str) -> dict:
    """Source tensor names as the target model names them: a modality tower is `item_tower.*`
    alone and `item_tower.modality.*` inside a FusionTower (ID + modality, --fusion add|cat)."""
    alone, fused = "item_tower.", "item_tower.modality."
    if (source_fusion == "none") == (fusion == "none"):
        return source
    if fusion != "none":                                   # MoRec source -> ID + MoRec target
        return {fused + k[len(alone):] if k.startswith(alone) else k: v for k, v in source.items()}
    return {alone + k[len(fused):] if k.startswith(fused) else k: v for k, v in source.items()
            if k.startswith(fused) or not k.startswith(alone)}   # the ID table and fusion layers dropped


def init_from_source(model: torch.nn.Module, spec: TransferSpec, saved: dict) -> dict[str, list[str]]:
    """Copy the source run's best weights into `model` (see the module doc); `saved` is the
    source's config.json. Returns {"loaded": names, "fresh": names} and logs them."""
    best = spec.run_dir / "checkpoint_best.pt"
    with source_lock(spec.run_dir, f"--init_from {spec.given}"):   # no run may start there while read
        checkpoint = load_checkpoint(best)
    require_entries(checkpoint, best, ("model", "epoch", "valid"))
    source = in_target_layout(checkpoint["model"], saved.get("fusion", "none"), spec.fusion)
    own = model.state_dict()
    ids = id_table_names(model)
    loaded = sorted(name for name, value in own.items()
                    if name not in ids and name in source and source[name].shape == value.shape)
    fresh = sorted(set(own) - set(loaded))
    model.load_state_dict({**own, **{name: source[name] for name in loaded}})
    log.info("--init_from %s (best epoch %d): loaded %d tensors, freshly initialised %d", best.parent,
             checkpoint["epoch"], len(loaded), len(fresh))
    log.info("loaded: %s", ", ".join(compact(loaded)) or "none")
    shown = fresh if len(fresh) <= 20 else compact(fresh)
    log.info("not loaded (ID tables, or absent / of another shape in the source): %s", ", ".join(shown) or "none")
    return {"loaded": loaded, "fresh": fresh}


def compact(names: list[str]) -> list[str]:
    """Tensor names grouped by their first two parts ('item_tower.text.*: 101 tensors')."""
    groups: dict[str, int] = {}
    for name in names:
        head = ".".join(name.split(".")[:3 if name.startswith("item_tower.") else 2])
        groups[head] = groups.get(head, 0) + 1
    return [f"{head}.* ({n})" if n > 1 else head for head, n in groups.items()]


def record_source(config_path: Path, spec: TransferSpec, saved: dict) -> None:
    """Add the source run's folder, label and data identity to the new run's config.json."""
    values = json.loads(config_path.read_text(encoding="utf-8"))
    folder = spec.run_dir
    values[KEY] = {"run_dir": str(folder), "label": folder.name, "dataset": saved.get("dataset"),
                   "data_identity": saved.get("data_identity"), "values_sha1": values_digest(saved)}
    write_json_atomic(config_path, values)


def values_digest(saved: dict) -> str:
    """sha1 of the source run's defining values except its seed: transfer runs of different seeds
    from sources that differ only in the seed share it (results tables group them in one row)."""
    from morec.config import RUN_CONTROL
    values = {k: v for k, v in saved.items() if k not in RUN_CONTROL | {"seed", "setting", "data_identity", KEY}}
    return hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def user_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The user encoder: the sequential model's (SASRec, GRU4Rec, NextItNet: `encoder`) or DSSM's user tower."""
    return model.encoder if hasattr(model, "encoder") else model.user_tower


def freeze_user_encoder(model: torch.nn.Module) -> int:
    """--freeze_user_encoder: its parameters do not train; returns how many were frozen."""
    params = list(user_encoder(model).parameters())
    for param in params:
        param.requires_grad_(False)
    return sum(p.numel() for p in params)
