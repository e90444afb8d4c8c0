"""Test the best checkpoint of train_missrec.py's run(s): same values, same overrides, or --label."""
import pathlib, sys; sys.path.insert(0, str(next(p for p in pathlib.Path(__file__).resolve().parents if (p / "morec").is_dir())))  # noqa: E401,E702
from morec.launch import main
from train_missrec import params

if __name__ == "__main__":
    main(params, "test", __file__)
