"""Benchmark vision MoRec on ml-100k's rendered posters: seconds per training step of in-batch
SASRec with a ResNet18 item tower, each distinct item of the batch encoded once (deduplication
on) against every slot encoded (off), at B = 16, L = 10 (the image data sets' setting).

    python scripts/bench_vision_step.py [--batch 16] [--seq_len 10] [--image_size 224]
                                        [--steps 3] [--threads 1] [--device cpu|cuda] [--amp]

The ResNet18 has random weights (torchvision's architecture; nothing is downloaded): the cost of
a step does not depend on the weights. One model, reset to the same weights for each mode; the
batches' pixels are decoded beforehand (the DataLoader workers' share is measured by
bench_images.py); 1 warm-up step, then the median of `--steps` timed steps (forward, backward,
AdamW) on the same batches. The loss of the first batch in eval mode must be the same either way.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702

import argparse
import copy

import torch
import torchvision

from morec.config import make_config
from morec.data.images import BatchesWithImages, ImageStore, ItemImages
from morec.tools.posters import ml100k_posters
from morec.models import SASRecRecommender
from morec.models.vision import VisionTower
from morec.parts import load_data, make_batches

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_text import step_times  # noqa: E402



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq_len", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    posters = ml100k_posters()
    cfg = make_config(dict(item_tower="vision", loss="inbatch", batch_size=args.batch,
                           max_seq_len=args.seq_len, embedding_dim=64, image_size=args.image_size))
    data = load_data(cfg)
    images = ItemImages(ImageStore(posters, args.image_size), [""] + [row.name for row in data.items[1:]])
    id_batches = list(make_batches(cfg, data).epoch(seed=cfg.seed))[:args.steps + 1]
    batches = [{k: v.to(device) for k, v in b.items()} for b in BatchesWithImages(id_batches, images)]
    torch.manual_seed(0)
    encoder = torchvision.models.resnet18(weights=None)
    encoder.fc = torch.nn.Identity()
    popularity = torch.from_numpy(data.popularity()).clamp_min(1e-30)
    model = SASRecRecommender(VisionTower(encoder, "resnet", 64), data.num_items, "inbatch", popularity,
                              args.seq_len, 2, 2, 0.1).to(device)
    initial = copy.deepcopy(model.state_dict())
    slots = sum(int((b["seqs"] != 0).sum()) for b in batches[1:]) / args.steps
    distinct = sum(len(b["image_ids"]) for b in batches[1:]) / args.steps
    print(f"ResNet18 in-batch SASRec, B={args.batch}, L={args.seq_len}, {args.image_size}x{args.image_size}, "
          f"device {device}{' bf16' if args.amp else ''}, {args.threads} thread(s): "
          f"{slots:.0f} item slots, {distinct:.0f} distinct items per batch")
    results = {}
    for dedup in (True, False):
        model.load_state_dict(initial)
        model.item_tower.deduplicate = dedup
        results[dedup] = step_times(model, batches, cfg, args.steps, device, args.amp)
        print(f"  dedup {'on ' if dedup else 'off'}: {results[dedup][0]:.3f} s/step "
              f"(eval loss of batch 0: {results[dedup][1]:.6f})")
    print(f"  speed-up from deduplication: {results[False][0] / results[True][0]:.2f}x")
    torch.testing.assert_close(results[True][1], results[False][1], rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    main()
