"""Extract the two-stage (TS) features of every item with a frozen encoder, once, into the cache.

Takes the same ``--key value`` parameters as the experiment scripts (data set, encoder, text
attributes, cache_dir, device); writes ``<cache_dir>/features/<...>.npy`` (+ ``.json``), which
every two-stage run with the same values then reads memory-mapped. Running it again is a no-op
while the cache is fresh; a cache built from another version of the encoder is rebuilt.
`--ts_layers all` caches every layer's pooled vector, (N+1, layers + 1, H) with the embedding
output first (the layer-cached two-stage head of `--two_stage true --ts_layers all`).

    python scripts/extract_features.py --bert_model_load bert_base_uncased [--device cuda]
    python scripts/extract_features.py --bert_model_load all_minilm_l6_v2 --ts_layers all
    python scripts/extract_features.py --dataset MIND --behaviors mind_60w_users.tsv \\
        --news mind_60w_items.tsv --bert_model_load bert_base_uncased --news_attributes title

Text encoders only for now (--item_tower text, the default here); image encoders plug in through
morec.features.ensure_features. Bad input ends with one line on stderr and exit code 2.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import logging
import time

DEFAULTS = dict(item_tower="text", two_stage=True)
BATCH_SIZE = 256          # items per encoder pass


def main(argv: list[str] | None = None) -> int:
    from morec.config import make_config, parse_overrides
    from morec.errors import InputError
    from morec.features import ensure_features
    from morec.resolve import item_input_spec
    from morec.parts import load_data, resolve_device

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        values = {**DEFAULTS, **parse_overrides(sys.argv[1:] if argv is None else argv)}
        if any(isinstance(v, list) for v in values.values()):
            raise InputError("extract_features.py takes one value per parameter, not a list")
        cfg = make_config(values)
        start = time.perf_counter()
        data = load_data(cfg)
        path = ensure_features(item_input_spec(cfg), data, resolve_device(cfg.device), BATCH_SIZE)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import numpy as np
    shape = np.load(path, mmap_mode="r").shape
    print(f"{path} {'x'.join(map(str, shape))} ({path.stat().st_size / 2 ** 20:.1f} MiB, "
          f"{time.perf_counter() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
