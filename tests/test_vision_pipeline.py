"""The vision input pipeline: pixels by item id from the LMDB, each batch's distinct items decoded
(in DataLoader workers), the deduplicated pixel tower, and catalogue encoding for evaluation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from morec.config import Config
from morec.data.images import (BatchesWithImages, ImageStore, ItemChunks, ItemImages, batch_image_ids,
                               image_loader)
from morec.distributed import World
from morec.errors import InputError
from morec.features import item_images
from morec.models.towers import PixelTower
from morec.resolve import image_spec, item_input_spec, tower_spec
from morec.parts import make_batches
from morec.train import catalogue_vectors
from text_helpers import ml100k
from vision_helpers import IMAGE_SIZE, poster_root

CPU = torch.device("cpu")


class MeanColourTower(PixelTower):
    """A known pixel tower: Linear over each image's mean colour (3 -> d)."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.dim, self.fc = dim, nn.Linear(3, dim)
        self.calls = 0                                      # images encoded so far

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += len(pixels)
        return self.fc(pixels.mean(dim=(2, 3)))


def poster_images() -> ItemImages:
    data = ml100k()
    return ItemImages(ImageStore(poster_root() / "ml-100k" / "posters.lmdb", IMAGE_SIZE),
                      [""] + [row.name for row in data.items[1:]])


def sasrec_bce_batches():
    cfg = Config(loss="bce", batch_size=32)
    return list(make_batches(cfg, ml100k()).epoch(seed=3))


def test_batch_images_are_the_distinct_items_of_the_batch_in_id_order():
    images = poster_images()
    batch = BatchesWithImages(sasrec_bce_batches()[:1], images)[0]
    every_id = torch.cat([batch["seqs"].reshape(-1), batch["negatives"].reshape(-1)])
    assert torch.equal(batch["image_ids"], torch.unique(every_id[every_id != 0]))
    assert batch["images"].shape == (len(batch["image_ids"]), 3, IMAGE_SIZE, IMAGE_SIZE)
    for row in (0, len(batch["image_ids"]) // 2, -1):                         # pixels of the right item
        name = images.names[int(batch["image_ids"][row])]
        assert torch.equal(batch["images"][row], images.store.load_tensor(name))


def test_workers_give_the_same_batches_as_the_main_process():
    images, batches = poster_images(), sasrec_bce_batches()[:4]
    inline = list(image_loader(BatchesWithImages(batches, images), 0, False))
    workers = list(image_loader(BatchesWithImages(batches, images), 2, False))
    assert len(inline) == len(workers) == 4
    for a, b in zip(inline, workers):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dssm_batches_encode_items_and_negatives_not_the_users_history():
    batch = next(make_batches(Config(model="dssm", loss="bce", batch_size=16), ml100k()).epoch(seed=1))
    expected = torch.unique(torch.cat([batch["items"], batch["negatives"].reshape(-1)]))
    assert torch.equal(batch_image_ids(batch), expected[expected != 0])


def test_deduplicated_tower_encodes_each_item_once_and_matches_per_slot_encoding():
    torch.manual_seed(0)
    images = poster_images()
    batch = BatchesWithImages(sasrec_bce_batches()[:1], images)[0]
    ids = torch.cat([batch["seqs"], batch["negatives"]], dim=1)               # (B, 2L+1)
    ids[0, :3] = 0                                                             # left padding, as short users have
    tower = MeanColourTower().eval()
    deduplicated = tower.encode_items(ids, (batch["image_ids"], batch["images"]))
    assert tower.calls == len(batch["image_ids"])
    tower.deduplicate, tower.calls = False, 0
    per_slot = tower.encode_items(ids, (batch["image_ids"], batch["images"]))
    assert tower.calls == int((ids != 0).sum()) > len(batch["image_ids"])
    torch.testing.assert_close(deduplicated, per_slot)
    assert deduplicated.shape == (*ids.shape, 4)
    assert torch.all(deduplicated[ids == 0] == 0) and bool((ids == 0).any())  # padding: zero vectors
    expected = tower.encode_pixels(images.pixels(ids[0, -3:]))                # three real slots directly
    torch.testing.assert_close(deduplicated[0, -3:], expected)


def test_tower_refuses_ids_whose_pixels_the_batch_lacks():
    tower = MeanColourTower()
    pixels = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="miss some of its item ids"):
        tower.encode_items(torch.tensor([[1, 5]]), (torch.tensor([1, 2]), pixels))
    with pytest.raises(ValueError, match="pass images"):
        tower.encode_items(torch.tensor([1]))


def test_catalogue_vectors_read_every_item_in_chunks():
    torch.manual_seed(0)
    images, num_items = poster_images(), ml100k().num_items

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.item_tower = MeanColourTower()

    model = Holder().eval()
    cfg = Config(eval_batch_size=500)                                          # 4 chunks of ids 0..1682
    vecs = catalogue_vectors(model, num_items, World(), CPU, cfg, images)
    assert vecs.shape == (num_items + 1, 4) and torch.all(vecs[0] == 0)
    some = torch.tensor([1, 2, 777, num_items])
    torch.testing.assert_close(vecs[some], model.item_tower.encode_pixels(images.pixels(some)))
    chunk_ids, pixels = ItemChunks(torch.arange(0, 3), 3, images)[0]
    assert torch.equal(chunk_ids, torch.arange(3)) and torch.all(pixels[0] == 0)


def test_missing_images_stop_the_run_with_the_count_and_the_list(tmp_path):
    from morec.data.image_format import missing_report_path
    from morec.tools.lmdb_builder import LmdbWriter
    store = ImageStore(poster_root() / "ml-100k" / "posters.lmdb", IMAGE_SIZE)
    path = tmp_path / "partial.lmdb"
    with LmdbWriter(path) as writer:
        for name in store.names()[:10]:
            writer.put(name, store.get_bytes(name))
    names = [""] + store.names()[:12]
    with pytest.raises(InputError, match=r"2 of 12 items have no image in .*partial\.lmdb; their names are listed in"):
        ItemImages(ImageStore(path, IMAGE_SIZE), names).check_complete()
    assert missing_report_path(path).read_text().split() == names[11:]


def test_a_missing_lmdb_names_the_file_and_how_to_make_it(tmp_path):
    cfg = Config(item_tower="vision", root_data_dir=str(tmp_path), image_lmdb="posters.lmdb")
    with pytest.raises(InputError, match=r"posters\.lmdb not found .*render_posters\.py"):
        item_images(image_spec(cfg), ml100k())


def test_two_stage_vision_features_are_cached_and_rebuilt_when_the_encoder_changes(tmp_path, monkeypatch):
    import os
    import morec.features
    from morec.features import ensure_features, vision_features
    from morec.models.vision import encode_images, load_vision_encoder
    from vision_helpers import TINY_VISION, tiny_vision_encoders
    cfg = Config(item_tower="vision", two_stage=True, cv_model_load=TINY_VISION["swin"], image_lmdb="posters.lmdb",
                 image_size=IMAGE_SIZE, root_data_dir=str(poster_root()), pretrained_dir=str(tiny_vision_encoders()),
                 cache_dir=str(tmp_path))
    data = ml100k()
    features, path = vision_features(item_input_spec(cfg), data, CPU)
    assert features.shape == (data.num_items + 1, 32) and not features[0].any()
    encoder, kind = load_vision_encoder(cfg.cv_model_load, tiny_vision_encoders())
    some = torch.tensor([1, 500, data.num_items])
    with torch.no_grad():
        expected = encode_images(encoder.eval(), kind, poster_images().pixels(some))
    torch.testing.assert_close(torch.from_numpy(features[some.numpy()]), expected, rtol=1e-4, atol=1e-5)

    def no_extraction(*args, **kwargs):
        raise AssertionError("the cache should have been read")
    monkeypatch.setattr(morec.features, "extract_vision_features", no_extraction)
    assert ensure_features(item_input_spec(cfg), data, CPU) == path              # fresh: read, not rebuilt
    weights = tiny_vision_encoders() / TINY_VISION["swin"] / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))           # "another version"
    try:
        with pytest.raises(AssertionError, match="should have been read"):
            vision_features(item_input_spec(cfg), data, CPU)
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_resumed_epoch_continues_with_the_same_batches_and_images():
    """optimizer_steps from step k (a checkpoint taken mid-epoch) gives the tail of the full epoch."""
    from types import SimpleNamespace
    from morec.train import EpochProgress, optimizer_steps
    cfg = Config(loss="bce", batch_size=128, accumulation_steps=2)
    run = SimpleNamespace(cfg=cfg, world=World(), device=CPU, images=poster_images(),
                          batches=make_batches(cfg, ml100k()))
    full = list(optimizer_steps(run, 1, EpochProgress()))
    resumed = list(optimizer_steps(run, 1, EpochProgress(step=2)))
    assert [len(step) for step in full] == [2, 2, 2, 2] and len(resumed) == 2  # 8 batches of 943 users
    for expected, got in zip(full[2:], resumed):
        for a, b in zip(expected, got):
            assert a.keys() == b.keys() == {"seqs", "negatives", "image_ids", "images"}
            assert all(torch.equal(a[key], b[key]) for key in a)


def test_extract_features_script_with_a_vision_encoder(tmp_path, capsys):
    import re
    from script_modules import import_script
    from vision_helpers import TINY_VISION, tiny_vision_encoders
    extract_features = import_script("extract_features")
    args = ["--item_tower", "vision", "--cv_model_load", TINY_VISION["resnet"], "--image_lmdb", "posters.lmdb",
            "--image_size", str(IMAGE_SIZE), "--root_data_dir", str(poster_root()),
            "--pretrained_dir", str(tiny_vision_encoders()), "--cache_dir", str(tmp_path), "--device", "cpu"]
    assert extract_features.main(args) == 0
    line = capsys.readouterr().out.strip()
    assert re.match(rf"^{re.escape(str(tmp_path))}/features/ml-100k-{TINY_VISION['resnet']}-img32imagenet-\w+\.npy 1410x512 ", line)


@pytest.mark.parametrize("dedup", [True, False])
def test_dedup_items_switch_reaches_the_vision_tower(dedup):
    """--dedup_items false: the vision tower encodes every slot of a batch, as the original."""
    from morec.config import make_config
    from morec.models.build import build_item_tower
    from vision_helpers import TINY_VISION, tiny_vision_encoders
    cfg = make_config(dict(item_tower="vision", cv_model_load=TINY_VISION["resnet"], image_size=IMAGE_SIZE,
                           pretrained_dir=str(tiny_vision_encoders()), embedding_dim=8, dedup_items=dedup))
    tower = build_item_tower(tower_spec(cfg), ml100k().num_items).eval()
    images, encode_pixels = [], tower.encode_pixels
    tower.encode_pixels = lambda pixels: images.append(len(pixels)) or encode_pixels(pixels)   # count images
    ids = torch.tensor([[0, 3, 5, 3], [5, 3, 7, 7]])                             # 7 real slots, 3 items
    image_ids = torch.tensor([3, 5, 7])
    with torch.no_grad():
        vecs = tower.encode_items(ids, (image_ids, torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE)))
    assert sum(images) == (3 if dedup else 7) and vecs.shape == (2, 4, 8)
