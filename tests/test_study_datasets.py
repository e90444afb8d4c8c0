"""Every study runs on any data set: `--dataset NAME --root_data_dir DIR` reach every planned run,
with the data set's settings (study_common.DATASET_SETTINGS) over SMALL; ml-100k stays the default."""
import sys

import pytest

from morec.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import study_common  # noqa: E402

STUDIES = ["study_q1_morec_vs_idrec", "study_q3_ts_vs_e2e", "study_q4_adaptation", "study_ts_layers",
           "study_q5_multimodal"]


def planned_runs(monkeypatch, module_name: str, argv: list[str]) -> tuple[list, str]:
    """The (Config, folder) pairs a study would train, and its output folder; nothing is trained."""
    seen = {}
    monkeypatch.setattr(study_common, "execute", lambda runs: None)
    monkeypatch.setattr(study_common, "report", lambda name, title, runs, out, then=None, groups=None: seen.update(runs=runs, out=out))
    monkeypatch.setattr(study_common, "write_page", lambda *args, **kwargs: None)
    module = __import__(module_name)
    module.main(argv)
    return seen["runs"], str(seen["out"])


@pytest.mark.parametrize("name", STUDIES)
def test_a_study_takes_the_data_set_and_its_folder(monkeypatch, tmp_path, name):
    runs, out = planned_runs(monkeypatch, name, ["--dataset", "amazon-scientific", "--root_data_dir", str(tmp_path)])
    assert runs and out == "studies/amazon-scientific"
    for cfg, run_dir in runs:
        assert (cfg.dataset, cfg.root_data_dir) == ("amazon-scientific", str(tmp_path))
        assert cfg.cold_start_count == 1                          # DATASET_SETTINGS["amazon-scientific"]
        assert run_dir.name.startswith("amazon-scientific-")


def test_ml100k_stays_the_default_with_small_settings(monkeypatch):
    runs, out = planned_runs(monkeypatch, "study_q1_morec_vs_idrec", [])
    assert out == "studies/ml-100k"
    assert all((cfg.dataset, cfg.root_data_dir, cfg.cold_start_count, cfg.repeat_targets)
               == ("ml-100k", "dataset", 5, "miss") for cfg, _ in runs)


def test_a_setting_given_on_the_command_line_beats_the_data_set_block(monkeypatch):
    runs, _ = planned_runs(monkeypatch, "study_q3_ts_vs_e2e", ["--dataset", "amazon-scientific", "--cold_start_count", "3"])
    assert {cfg.cold_start_count for cfg, _ in runs} == {3}
