"""What ties a run to its data: digests recorded in the run's config.json.

A run's weights mean something only for the data it was trained on: item id i is row i of the ID
table, and ids follow the items file's order (SPEC "Data"). Reordering the items file after
training would make `test_*.py` rank other items than the model learnt, with no error. So a new
run records, under the key ``data_identity`` of its config.json:

    users       the users file: its path and the sha256 of its bytes
    items       the items file: its path and the sha256 of its bytes
    item_ids    the item-id mapping: the number of items and the sha256 of their names in id order
    image_keys  vision and text+vision runs: the image LMDB's path, number of keys and sha256 of its sorted key set
    image_bytes the same runs: the sha256 of every image's bytes in key order (ImageStore.content_sha256)

and, under its key ``inputs``, the content record of every other input the run read, by role
(morec.digests; noted by the loaders as they read):

    text_encoder, vision_encoder   {"folder", "files": {name: sha256}}: config.json and the weights
    tokenizer                      {"folder", "fingerprint"}: how it maps text to ids
    text_features, vision_features {"file", "bytes", "sha256"}: the two-stage feature cache
    layer_cache                    {"file", "bytes", "sha256"}: the frozen-layer cache (--cache_frozen_layers)

`--resume` and `test_*.py` compute the same records from the data they read and refuse a
mismatch, saying which file changed: the encoder files and the tokenizer before anything is
built (`check_recorded_files`: a feature cache is not rebuilt from a changed encoder first),
everything the run read again once its model is built (`check_run_inputs`). Runs made before a
record existed get a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from morec.atomic_io import write_json_atomic
from morec.data.sequences import SequenceData
from morec.digests import folder_changes, inputs_read
from morec.errors import InputError
from morec.specs import DataSpec

log = logging.getLogger("morec")

KEY = "data_identity"
FIX = ("Restore the data this run was trained on, or train a new run on this data "
       "(another --label, or --overwrite)")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def names_sha256(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def data_identity(spec: DataSpec, data: SequenceData) -> dict:
    """The record of the data a run reads (`spec`: its files; see the module doc)."""
    users, items = spec.users_file, spec.items_file
    identity = {
        "users": {"file": str(users), "sha256": file_sha256(users)},
        "items": {"file": str(items), "sha256": file_sha256(items)},
        "item_ids": {"count": data.num_items, "sha256": names_sha256([row.name for row in data.items[1:]])},
    }
    if spec.reads_images:
        from morec.data.images import ImageStore
        lmdb_path = spec.lmdb_file
        keys = ImageStore(lmdb_path).names()             # sorted (LMDB key order)
        identity["image_keys"] = {"file": str(lmdb_path), "count": len(keys), "sha256": names_sha256(keys)}
        identity["image_bytes"] = {"file": str(lmdb_path), "sha256": ImageStore(lmdb_path).content_sha256()}
    return identity


def identity_changes(saved: dict, current: dict) -> list[str]:
    """What differs between the recorded and the current data, one phrase each."""
    changes = []
    for what in ("users", "items"):
        if saved[what]["sha256"] != current[what]["sha256"]:
            changes.append(f"the {what} file {current[what]['file']} changed since training "
                           f"(sha256 {saved[what]['sha256'][:12]} then, {current[what]['sha256'][:12]} now)")
    old, new = saved["item_ids"], current["item_ids"]
    if old["count"] != new["count"]:
        changes.append(f"the data now has {new['count']} items, the run was trained on {old['count']}")
    elif old["sha256"] != new["sha256"]:
        changes.append("the item ids now belong to other items (the items file's order or names changed)")
    old, new = saved.get("image_keys"), current.get("image_keys")
    if old and new and old["sha256"] != new["sha256"]:
        changes.append(f"the image LMDB {new['file']} holds another set of items "
                       f"({new['count']} keys now, {old['count']} at training)")
    elif (old := saved.get("image_bytes")) and (new := current.get("image_bytes")) and old["sha256"] != new["sha256"]:
        changes.append(f"the images in the image LMDB {new['file']} changed since training (same items, "
                       f"other image bytes: sha256 {old['sha256'][:12]} then, {new['sha256'][:12]} now)")
    return changes


def check_data_identity(config_path: Path, current: dict, action: str) -> None:
    """Refuse to `action` ('test', 'resume') a run whose config.json records other data."""
    try:
        saved = json.loads(config_path.read_text()).get(KEY)
    except (OSError, ValueError, AttributeError):
        return                          # a missing or broken config.json is reported where it is read
    if saved is None:
        log.warning("%s records no data identity (a run made before it was recorded): cannot check "
                    "that the data is the one it was trained on", config_path)
        return
    changes = identity_changes(saved, current)
    if changes:
        raise InputError(f"cannot {action} {config_path.parent}: {'; '.join(changes)}. {FIX}")


def record_data_identity(config_path: Path, current: dict) -> None:
    """Add the data identity and the inputs read (morec.digests) to a new run's config.json
    (rewritten atomically)."""
    values = json.loads(config_path.read_text())
    values[KEY] = {**current, INPUTS: inputs_read()}
    write_json_atomic(config_path, values)


# ----------------------------------------------------------------------------- the other inputs

INPUTS = "inputs"
INPUT_FIX = ("Restore the files the run was trained with, or retrain it on these (the train script "
             "with --overwrite)")
ROLE_NAMES = {"text_encoder": "the text encoder", "vision_encoder": "the vision encoder", "tokenizer": "the tokenizer",
              "text_features": "the two-stage text feature cache", "vision_features": "the two-stage vision feature cache",
              "layer_cache": "the frozen-layer cache"}


def input_changes(saved: dict, current: dict) -> list[str]:
    """What differs between the recorded inputs and those read now (roles read by both), one phrase each."""
    changes = []
    for role in sorted(set(saved) & set(current)):
        old, new, what = saved[role], current[role], ROLE_NAMES.get(role, role)
        if "files" in old:
            for name in sorted(set(old["files"]) | set(new.get("files", {}))):
                then, now = old["files"].get(name), new.get("files", {}).get(name)
                if then != now:
                    changes.append(f"{what} file {Path(new['folder']) / name} changed since training "
                                   f"(sha256 {str(then)[:12]} then, {str(now)[:12]} now)")
        elif "fingerprint" in old and old["fingerprint"] != new.get("fingerprint"):
            changes.append(f"{what} of {new['folder']} maps text to other ids than at training (its "
                           "tokenizer files changed)")
        elif "sha256" in old and old["sha256"] != new.get("sha256"):
            changes.append(f"{what} {new['file']} holds other features than at training (rebuilt from "
                           f"other inputs, or replaced: sha256 {old['sha256'][:12]} then, {new['sha256'][:12]} now)")
    return changes


def saved_inputs(config_path: Path) -> dict | None:
    try:
        return json.loads(config_path.read_text()).get(KEY, {}).get(INPUTS)
    except (OSError, ValueError, AttributeError):
        return None                     # a missing or broken config.json is reported where it is read


def check_recorded_files(config_path: Path, action: str) -> None:
    """Before a run is built for `action` ('test', 'resume'): its recorded encoder files and
    tokenizer, recomputed from the folders they were read from, must be unchanged."""
    saved, changes = saved_inputs(config_path) or {}, []
    for role, record in saved.items():
        if "files" in record:
            changes += folder_changes(record, ROLE_NAMES.get(role, role))
        elif "fingerprint" in record and Path(record["folder"]).is_dir():
            from morec.models.text import load_tokenizer
            load_tokenizer(Path(record["folder"]))                  # notes its fingerprint
            changes += input_changes({role: record}, {role: inputs_read()[role]})
    if changes:
        raise InputError(f"cannot {action} {config_path.parent}: {'; '.join(changes)}. {INPUT_FIX}")


def check_run_inputs(config_path: Path, action: str) -> None:
    """Once the model is built for `action`: every input noted as read must be the one recorded."""
    saved = saved_inputs(config_path)
    if saved is None:
        log.warning("%s records no digest of the encoder, tokenizer or feature cache (a run made before "
                    "they were recorded): cannot check that they are those it was trained with", config_path)
        return
    changes = input_changes(saved, inputs_read())
    if changes:
        raise InputError(f"cannot {action} {config_path.parent}: {'; '.join(changes)}. {INPUT_FIX}")


def bind_run_to_data(config_path: Path, spec: DataSpec, data: SequenceData, resumed: bool, record: bool) -> None:
    """A resumed run checks its data (`spec`) against config.json; a new one records it there
    (`record`: this process writes the run folder, rank 0 under DDP)."""
    current = data_identity(spec, data)
    if resumed:
        check_data_identity(config_path, current, "resume")
    elif record:
        record_data_identity(config_path, current)
