"""Build the H&M image LMDB with the original release's file names (see dataset/HM/README.md).

    python dataset/HM/build_lmdb.py [--images dataset/HM/hm_images]
        [--items dataset/HM/hm_50w_items.tsv] [--out dataset/HM/hm_50w_images.lmdb] [...]

Every option of scripts/build_lmdb.py works here; only the defaults differ.
"""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
import importlib.util

HERE = pathlib.Path(__file__).resolve().parent
ROOT = next(p for p in HERE.parents if (p / "morec").is_dir())
DEFAULTS = dict(images=HERE / "hm_images", items=HERE / "hm_50w_items.tsv",
                out=HERE / "hm_50w_images.lmdb")


def _generic_script():
    """scripts/build_lmdb.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_lmdb_cli", ROOT / "scripts" / "build_lmdb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    _generic_script().main(**DEFAULTS)
