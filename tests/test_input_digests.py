"""A cache or store is checked by its content, not only by its name (morec.digests): a run's
config.json records a digest of every input it read, and --resume and the test scripts refuse a
change, naming the file; a new run refused leaves no folder. Real tiny runs on ml-100k (tiny random
BERT, rendered posters with a tiny ResNet), CPU, 2 epochs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from conftest import REPO, run_in_process
from text_helpers import TINY, tiny_encoders
from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root, tiny_vision_encoders

TEXT = "inbatch_sasrec_e2e_text"
SMALL = ["--max_seq_len", "5", "--embedding_dim", "8", "--batch_size", "512", "--device", "cpu"]


def text_run(tmp_path: Path, *extra: str, label: str = "r") -> list[str]:
    """Arguments of a tiny text run on ml-100k, with its own copy of the tiny BERT (to change)."""
    encoders = tmp_path / "enc"
    if not encoders.exists():
        shutil.copytree(tiny_encoders() / TINY["bert"], encoders / "bert")
    return ["--item_tower", "text", "--pretrained_dir", str(encoders), "--bert_model_load", "bert",
            "--cache_dir", str(tmp_path / "cache"), "--runs_dir", str(tmp_path / "runs"), "--label", label,
            *SMALL, *extra]


def train(args: list[str], capsys, folder: str = TEXT, *more: str) -> tuple[int, str]:
    code, _, err = run_in_process(folder, "train", *args, "--epoch", "2", *more, capsys=capsys)
    return code, err


def run_test(args: list[str], capsys, folder: str = TEXT) -> tuple[int, str, dict | None]:
    code, out, err = run_in_process(folder, "test", *args, capsys=capsys)
    result = json.loads(Path(args[args.index("--runs_dir") + 1], args[args.index("--label") + 1],
                             "test_metrics.json").read_text()) if code == 0 else None
    return code, err, result


def layer_cache(tmp_path: Path) -> Path:
    (path,) = (tmp_path / "cache" / "features").glob("*-layers.npy")
    return path


def change_weights(folder: Path) -> None:
    """Add 0.5 to the word embeddings of the encoder's model.safetensors."""
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] + 0.5
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# ----------------------------------------------------------------------------- the all-layer feature cache

def test_an_unchanged_two_stage_run_tests_and_resumes_with_the_same_numbers(tmp_path, capsys, caplog):
    args = text_run(tmp_path, "--two_stage", "--ts_layers", "all")
    assert train(args, capsys)[0] == 0
    saved = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())["data_identity"]["inputs"]
    assert set(saved) == {"text_encoder", "tokenizer", "text_features"}
    assert saved["text_features"]["file"] == str(layer_cache(tmp_path))
    assert set(saved["text_encoder"]["files"]) == {"config.json", "model.safetensors"}
    first, second = run_test(args, capsys), run_test(args, capsys)
    assert first[0] == second[0] == 0 and first[2]["test"] == second[2]["test"]
    code, err = train(args, capsys, TEXT, "--resume", "--epoch", "3")
    assert code == 0, err
    resumed = run_test(args, capsys)                # epoch 3 may be the new best: the resumed run's own numbers
    assert resumed[0] == 0, resumed[1]
    config = tmp_path / "runs" / "r" / "config.json"             # a run made before inputs were recorded
    values = json.loads(config.read_text())
    del values["data_identity"]["inputs"]
    config.write_text(json.dumps(values))
    code, err, result = run_test(args, capsys)
    assert code == 0 and result["test"] == resumed[2]["test"], err
    assert any("records no digest of the encoder, tokenizer or feature cache" in r.getMessage() for r in caplog.records)


def test_a_zeroed_layer_cache_is_refused_by_test_and_by_a_new_run(tmp_path, capsys):
    args = text_run(tmp_path, "--two_stage", "--ts_layers", "all")
    assert train(args, capsys)[0] == 0
    cache = layer_cache(tmp_path)
    features = np.load(cache, mmap_mode="r+")
    features[:] = 0                                    # same file, same size, same header
    features.flush()
    del features
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, str(cache), "does not hold the bytes it was written with", "delete it and its .json")
    code, err = train(text_run(tmp_path, "--two_stage", "--ts_layers", "all", label="new"), capsys)
    assert_refused(code, err, str(cache))
    assert not (tmp_path / "runs" / "new").exists()
    cache.with_suffix(".json").write_text("{\"key\": ")             # a corrupt sidecar: also refused
    code, err = train(text_run(tmp_path, "--two_stage", "--ts_layers", "all", label="new"), capsys)
    assert_refused(code, err, f"feature cache sidecar {cache.with_suffix('.json')} cannot be read")
    assert not (tmp_path / "runs" / "new").exists()


def test_a_truncated_layer_cache_is_refused_and_one_truncated_after_loading_is_not_read(tmp_path, capsys):
    args = text_run(tmp_path, "--two_stage", "--ts_layers", "all")
    assert train(args, capsys)[0] == 0
    cache = layer_cache(tmp_path)
    whole = cache.read_bytes()
    # truncated while a run holds the features: they were read into memory whole, so the run
    # goes on with them (a memory map of the file would die with SIGBUS); run in a child process
    child = f"""
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
import numpy as np
from morec.features import _load_features
path = {str(cache)!r}
features = _load_features(__import__('pathlib').Path(path), __import__('pathlib').Path(path[:-4] + '.json'), 1202)
before = float(np.abs(features).sum())
os.truncate(path, 4096)
print(before == float(np.abs(features).sum()), features.shape)
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("True"), (done.returncode, done.stderr[-2000:])
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, str(cache), f"feature cache {cache} cannot be read: it holds 4096 bytes, but", "truncated")
    cache.write_bytes(whole)                           # restored: tests again
    assert run_test(args, capsys)[0] == 0


# ----------------------------------------------------------------------------- the encoder and tokenizer

def test_a_two_stage_run_whose_encoder_weights_changed_is_refused_before_the_cache_is_rebuilt(tmp_path, capsys):
    args = text_run(tmp_path, "--two_stage")
    assert train(args, capsys)[0] == 0
    (cache,) = (tmp_path / "cache" / "features").glob("*.npy")
    before = cache.read_bytes()
    change_weights(tmp_path / "enc" / "bert")
    code, err, _ = run_test(args, capsys)
    weights = tmp_path / "enc" / "bert" / "model.safetensors"
    assert_refused(code, err, f"the text encoder file {weights} changed since training", "--overwrite")
    assert cache.read_bytes() == before                # refused before anything was rebuilt
    code, err = train(args, capsys, TEXT, "--resume", "--epoch", "3")
    assert_refused(code, err, f"cannot resume {tmp_path / 'runs' / 'r'}", str(weights))


def test_a_lora_run_whose_encoder_config_changed_is_refused_by_test_and_resume(tmp_path, capsys):
    args = text_run(tmp_path, "--peft", "lora", "--trainable_layers", "-1")
    code, err = train(args, capsys)
    assert code == 0, err
    assert run_test(args, capsys)[0] == 0
    config = tmp_path / "enc" / "bert" / "config.json"
    values = json.loads(config.read_text())
    values["layer_norm_eps"] = 0.1                     # same weights (the frozen ones are reloaded), other numbers
    config.write_text(json.dumps(values))
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, f"the text encoder file {config} changed since training")
    code, err = train(args, capsys, TEXT, "--resume", "--epoch", "3")
    assert_refused(code, err, f"the text encoder file {config} changed since training")


def swap_two_tokens(folder: Path) -> None:
    """Exchange the ids of two vocabulary entries of tokenizer.json (a valid, other tokenizer)."""
    path = folder / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    vocab = tokenizer["model"]["vocab"]
    words = [w for w in vocab if w.isalpha() and len(w) > 3][:2]
    vocab[words[0]], vocab[words[1]] = vocab[words[1]], vocab[words[0]]
    path.write_text(json.dumps(tokenizer))


def test_a_text_run_whose_tokenizer_changed_is_refused(tmp_path, capsys):
    args = text_run(tmp_path)
    assert train(args, capsys)[0] == 0
    swap_two_tokens(tmp_path / "enc" / "bert")
    code, err, _ = run_test(args, capsys)
    assert_refused(code, err, f"the tokenizer of {tmp_path / 'enc' / 'bert'} maps text to other ids")
    code, err = train(args, capsys, TEXT, "--resume", "--epoch", "3")
    assert_refused(code, err, "the tokenizer of", "cannot resume")
    assert json.loads((tmp_path / "runs" / "r" / "config.json").read_text())["data_identity"]["inputs"]["tokenizer"]["fingerprint"]


# ----------------------------------------------------------------------------- the image LMDB

def posters_copy(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(poster_root(), root, symlinks=True)
    return root


def rewrite_one_image(lmdb_path: Path) -> None:
    """Give the first item the image bytes of the second, under the same keys (in place, in a
    child process: this one holds the LMDB open read-only)."""
    child = f"""
import lmdb
env = lmdb.open({str(lmdb_path)!r}, subdir=False, lock=False)
with env.begin(write=True) as txn:
    keys = [key for key, _ in txn.cursor() if not key.startswith(b"__meta__/")][:2]
    txn.put(keys[0], txn.get(keys[1]))
env.close()
"""
    subprocess.run([sys.executable, "-c", child], check=True, timeout=60)


def vision_run(tmp_path: Path, root: Path, label: str = "v", encoders: Path | None = None) -> list[str]:
    return ["--item_tower", "vision", "--two_stage", "--cv_model_load", TINY_VISION["resnet"],
            "--image_lmdb", "posters.lmdb", "--image_size", str(IMAGE_SIZE), "--root_data_dir", str(root),
            "--pretrained_dir", str(encoders or tiny_vision_encoders()), "--cache_dir", str(tmp_path / "cache"),
            "--runs_dir", str(tmp_path / "runs"), "--label", label, *SMALL]


def test_an_image_lmdb_whose_images_changed_under_the_same_keys_is_refused(tmp_path, capsys):
    root = posters_copy(tmp_path)
    args = vision_run(tmp_path, root)
    code, err = train(args, capsys, "inbatch_sasrec_e2e_vision")
    assert code == 0, err
    assert run_test(args, capsys, "inbatch_sasrec_e2e_vision")[0] == 0
    lmdb_path = root / "ml-100k" / "posters.lmdb"
    rewrite_one_image(lmdb_path)
    code, err, _ = run_test(args, capsys, "inbatch_sasrec_e2e_vision")
    assert_refused(code, err, f"the images in {lmdb_path} changed after it was built")
    code, err = train(vision_run(tmp_path, root, "new"), capsys, "inbatch_sasrec_e2e_vision")
    assert_refused(code, err, f"the images in {lmdb_path} changed after it was built", "rebuild the LMDB")
    assert not (tmp_path / "runs" / "new").exists()
    identity = json.loads((tmp_path / "runs" / "v" / "config.json").read_text())["data_identity"]
    assert len(identity["image_bytes"]["sha256"]) == 64


def test_a_two_stage_vision_run_whose_encoder_changed_is_refused(tmp_path, capsys):
    import torch
    encoders = tmp_path / "vision_enc"
    shutil.copytree(tiny_vision_encoders() / TINY_VISION["resnet"], encoders / TINY_VISION["resnet"])
    args = vision_run(tmp_path, poster_root(), encoders=encoders)
    code, err = train(args, capsys, "inbatch_sasrec_e2e_vision")
    assert code == 0, err
    weights = encoders / TINY_VISION["resnet"] / "resnet18.pth"
    state = torch.load(weights, weights_only=True)
    state["conv1.weight"] += 0.5
    torch.save(state, weights)
    code, err, _ = run_test(args, capsys, "inbatch_sasrec_e2e_vision")
    assert_refused(code, err, f"the vision encoder file {weights} changed since training")


def test_the_run_record_names_an_image_change_even_without_a_build_digest(tmp_path):
    """An LMDB written before builders recorded content_sha256: the run's own record still tells."""
    from morec.data.identity import identity_changes
    from morec.data.images import ImageStore
    root = posters_copy(tmp_path)
    lmdb_path = root / "ml-100k" / "posters.lmdb"
    env = lmdb.open(str(lmdb_path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.delete(b"__meta__/content_sha256")
    env.close()                                         # (a fresh copy: not open in this process yet)
    then = ImageStore(lmdb_path).content_sha256()
    rewrite_one_image(lmdb_path)
    now = ImageStore(lmdb_path).content_sha256()
    assert then != now
    ids = {"users": {"sha256": "u"}, "items": {"sha256": "i"}, "item_ids": {"count": 1, "sha256": "x"},
           "image_keys": {"file": str(lmdb_path), "count": 1, "sha256": "k"}}
    changes = identity_changes({**ids, "image_bytes": {"file": str(lmdb_path), "sha256": then}},
                               {**ids, "image_bytes": {"file": str(lmdb_path), "sha256": now}})
    assert changes == [f"the images in the image LMDB {lmdb_path} changed since training (same items, other "
                       f"image bytes: sha256 {then[:12]} then, {now[:12]} now)"]


# ----------------------------------------------------------------------------- morec.digests

def test_chunk_records_verify_whole_and_sampled_and_name_the_changed_bytes(tmp_path, monkeypatch):
    from morec import digests
    from morec.errors import InputError
    data = bytes(range(256)) * 400                      # 102400 bytes, chunks of 1000: 103 chunks
    path = tmp_path / "blob"
    with open(path, "wb") as f:
        writer = digests.ChunkHasher(f, 1000)
        writer.write(data[:1500])
        writer.write(data[1500:])
    record = writer.record()
    assert record == digests.chunk_record(data, 1000) and len(record["chunks"]) == 103
    digests.verify_chunks(path, record, "fix")
    changed = bytearray(data)
    changed[51_234] ^= 1
    path.write_bytes(changed)
    with pytest.raises(InputError, match=r"file .*blob does not hold the bytes it was written with \(bytes 51000\.\.52000"):
        digests.verify_chunks(path, record, "fix")
    monkeypatch.setattr(digests, "FULL_CHECK_BYTES", 10_000)     # "big": first, last and 8 chunks between
    sampled = digests.checked_chunks(len(data), record)
    assert len(sampled) == 10 and sampled[0] == 0 and sampled[-1] == 102 and 51 not in sampled
    digests.verify_chunks(path, record, "fix")          # a sampled check misses chunk 51 (documented)
    path.write_bytes(data[:-1])
    with pytest.raises(InputError, match="holds 102399 bytes, but 102400 were written"):
        digests.verify_chunks(path, record, "fix")


def test_file_digests_of_big_files_are_memoised_by_size_and_mtime(tmp_path, monkeypatch):
    from morec import digests
    monkeypatch.setenv("MOREC_DIGEST_MEMO", str(tmp_path / "memo"))
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 5000)
    first = digests.file_sha256(path, memo_min_bytes=1000)
    assert len(list((tmp_path / "memo").iterdir())) == 1
    digests._MEMO.clear()
    calls = []
    monkeypatch.setattr(digests, "_hash_file", lambda p: calls.append(p) or "x")
    assert digests.file_sha256(path, memo_min_bytes=1000) == first and not calls     # read from the memo
    stat = path.stat()
    path.write_bytes(b"b" * 5000)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert digests.file_sha256(path, memo_min_bytes=1000) == "x" and calls == [path]   # new mtime: hashed again


@pytest.mark.parametrize("extra", [[], ["--two_stage", "--ts_layers", "all"],
                                   ["--trainable_layers", "1", "--cache_frozen_layers", "true"]],
                         ids=["tokens", "features", "layer_cache"])
def test_a_cache_folder_that_cannot_be_written_is_one_error_and_no_run_folder(tmp_path, capsys, extra):
    """--cache_dir below a regular file (as a read-only or full one: an OSError when the cache is
    written): exit 2, one line naming the cache file and --cache_dir; no traceback, no run folder."""
    args = text_run(tmp_path, *extra)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args[args.index("--cache_dir") + 1] = str(blocker / "cache")
    code, err = train(args, capsys)
    assert_refused(code, err, "cannot write the ", str(blocker / "cache"), "writable folder")
    assert not (tmp_path / "runs" / "r").exists()
