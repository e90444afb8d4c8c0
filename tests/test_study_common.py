"""What the study scripts share (scripts/study_common.py): the default seed count of an arm
(5 where the encoder does not train, 3 where it trains end to end, unless --seed), the page's
line on it, and the per-user-group tables of a study (--user_groups)."""
from __future__ import annotations

import pytest

from conftest import REPO
from morec.errors import InputError


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import study_common
    return study_common


@pytest.mark.parametrize("part, seeds", [
    ({"item_tower": "id"}, [1, 2, 3, 4, 5]),
    ({"item_tower": "text", "two_stage": True}, [1, 2, 3, 4, 5]),
    ({"item_tower": "text+vision", "two_stage": True, "mm_fusion": "sum"}, [1, 2, 3, 4, 5]),
    ({"item_tower": "text", "two_stage": False}, [1, 2, 3]),
    ({"item_tower": "text", "two_stage": False, "peft": "lora", "trainable_layers": -1}, [1, 2, 3]),
    ({"item_tower": "vision", "two_stage": False}, [1, 2, 3]),
    ({"item_tower": "text+vision", "two_stage": False, "mm_cached_branch": "text"}, [1, 2, 3]),
])
def test_default_seeds_five_for_cheap_arms_three_for_end_to_end(common, part, seeds, tmp_path):
    assert common.default_seeds({**common.SMALL, **part}) == seeds
    none = {"all": {}, "id": {}, "mo": {}}
    runs = common.study_runs([part], none, tmp_path)
    assert sorted(cfg.seed for cfg, _ in runs) == seeds


def test_seed_given_on_the_command_line_wins_for_every_arm(common, tmp_path):
    parts = [common.IDREC, common.MOREC_E2E, {**common.MOREC_TS, "dnn_layers": 2}]
    runs = common.study_runs(parts, {"all": {"seed": [1, 2, 3, 4, 5, 6, 7]}, "id": {}, "mo": {}}, tmp_path)
    assert len(runs) == 3 * 7
    runs = common.study_runs(parts, {"all": {}, "id": {}, "mo": {"seed": [1, 2]}}, tmp_path)
    by_tower = {}
    for cfg, _ in runs:
        by_tower.setdefault((cfg.item_tower, cfg.two_stage), []).append(cfg.seed)
    assert by_tower == {("id", False): [1, 2, 3, 4, 5], ("text", False): [1, 2], ("text", True): [1, 2]}


def test_the_study_page_says_how_the_seeds_were_chosen(common):
    from study_page import seeds_line
    assert "--seed" in seeds_line(["--seed", "1,2,3,4,5"])
    assert seeds_line([]).startswith("**Seeds.** The studies' default: 5 seeds per arm")


def test_q1_defaults_to_five_idrec_and_three_text_e2e_seeds(common, tmp_path, monkeypatch):
    import study_q1_morec_vs_idrec
    seen = {}

    def fake(name, title, parts, args, overrides, *rest):
        seen["runs"] = common.study_runs(parts, overrides, tmp_path)
    monkeypatch.setattr(study_q1_morec_vs_idrec, "run_study", fake)
    study_q1_morec_vs_idrec.main(["--out", str(tmp_path), "--table_only"])
    seeds = {}
    for cfg, _ in seen["runs"]:
        seeds.setdefault(cfg.item_tower, set()).add(cfg.seed)
    assert seeds == {"id": {1, 2, 3, 4, 5}, "text": {1, 2, 3}}


def test_q6_defaults_to_five_seeds_two_stage_and_three_end_to_end(common, tmp_path, monkeypatch):
    import study_q6_transfer
    root = tmp_path / "data"
    (root / "ml-100k").mkdir(parents=True)
    for name in ("users.tsv", "items.tsv"):
        (root / "ml-100k" / name).symlink_to(REPO / "dataset" / "ml-100k" / name)
    for morec, morec_seeds in (["--morec", "ts"], {1, 2, 3, 4, 5}), ([], {1, 2, 3}):
        seen = {}
        monkeypatch.setattr(study_q6_transfer, "run_study", lambda name, title, parts, *_: seen.setdefault("parts", parts))
        study_q6_transfer.main(["--out", str(tmp_path), "--table_only", "--root_data_dir", str(root)] + morec)
        ids = {p["seed"] for p in seen["parts"] if p["item_tower"] == "id"}
        mos = {p["seed"] for p in seen["parts"] if p["item_tower"] != "id"}
        assert ids == {1, 2, 3, 4, 5} and mos == morec_seeds
    with pytest.raises(InputError, match="--mo.seed"):
        study_q6_transfer.main(["--out", str(tmp_path), "--table_only", "--root_data_dir", str(root), "--mo.seed", "1"])


def test_user_group_specs_name_the_data_sets_file_or_another(common, tmp_path):
    data = REPO / "dataset" / "ml-100k"
    specs = common.group_specs("gender,age_band", data)
    assert [s.rsplit(":", 1)[1] for s in specs] == ["gender", "age_band"]
    assert all(s.rsplit(":", 1)[0].endswith("user_groups.tsv") for s in specs)
    assert common.group_specs(f"{tmp_path}/g.tsv:x", data) == [f"{tmp_path}/g.tsv:x"]
    with pytest.raises(InputError, match="give the columns"):
        common.group_specs("", data)


def test_group_tables_write_one_file_per_column_with_idrec_and_the_modality_rows(common, tmp_path):
    """Fake runs of IDRec, text and vision (2 seeds, per-user ranks): one table per column, the
    vision rows left out, a Δ vs IDRec per group with the seed-level test."""
    import numpy as np
    from morec.report.run_files import load_run
    from test_results_table import fake_ranks, fake_run
    users = [line.split("\t")[0] for line in (REPO / "dataset/ml-100k/user_groups.tsv").read_text().splitlines()[1:]]
    groups = tmp_path / "groups.tsv"
    groups.write_text("user\tgender\n" + "".join(f"{u}\t{'F' if i % 3 == 0 else 'M'}\n" for i, u in enumerate(users[:40])))
    rng = np.random.default_rng(0)
    runs = []
    for tower in ("id", "text", "vision"):
        for seed in (1, 2):
            config = {"item_tower": tower, "seed": seed, **({"two_stage": True} if tower != "id" else {})}
            run = fake_run(tmp_path / "runs", f"{tower}-s{seed}", config, 0.1, 0.05)
            fake_ranks(run, rng.integers(0, 30, 40), np.zeros(40), users=users[:40])
            runs.append(load_run(run))
    paths = common.group_tables("q", runs, [f"{groups}:gender"], "text", tmp_path)
    text = paths[0].read_text()
    assert paths[0].name == "q_groups_gender.md" and text.startswith("# Per user group (gender):")
    assert "F (14)" in text and "M (26)" in text and "text" in text and "vision" not in text.split("\n\n")[1]


def test_summary_welch_reads_the_committed_q4_table_at_the_seed_level(tmp_path, monkeypatch):
    """scripts/summary_welch.py: Welch's t from the CSV's mean, sd and n (scipy's
    ttest_ind_from_stats), each MoRec row against the IDRec row of its setting, --against rows
    too; on a Q4 table as once committed (tests/data/q4_adaptation_summary_3_seeds.csv: 3 seeds an
    arm, before its runs were re-run): top-2 fine-tuning vs IDRec at p = 0.026 on NDCG@10, and the
    LoRA arm below top-2 fine-tuning."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import summary_welch
    out = summary_welch.main([str(REPO / "tests/data/q4_adaptation_summary_3_seeds.csv"),
                              "--against", "E2E:peft=none trainable_layers=2", "--out", str(tmp_path / "w.md")])
    text = out.read_text()
    top2 = "text E2E (peft=none trainable_layers=2)"
    assert f"| regular, {top2} | IDRec | 3 vs 3 | +1.27, p = 0.047 * | 0.044 | +1.36, p = 0.026 * | 0.001 |" in text
    assert f"| regular, text E2E (peft=lora trainable_layers=-1) | {top2} | 3 vs 3 | -1.54, p = 0.014 * |" in text
    assert f"| regular, {top2} | {top2} |" not in text                                   # not against itself
    assert "re-run the study to get them" in text
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a results_table.py CSV"):
        summary_welch.main([str(bad)])


@pytest.mark.parametrize("argv, refused", [
    (["--arms", "full", "--peft", "lora"], "--peft lora: contradicts the arm full (peft none)"),
    (["--arms", "full,top2", "--mo.trainable_layers", "2"], "--mo.trainable_layers 2: contradicts the arm full"),
    (["--arms", "ts_all", "--dnn_layers", "3"], "--dnn_layers 3: contradicts the arm ts_all (dnn_layers 2)"),
    (["--arms", "id,lora", "--item_tower", "text"], "contradicts the arm id (item_tower id)"),
    (["--arms", "ts_last", "--ts_layers", "all"], "contradicts the arm ts_last (ts_layers last)"),
    (["--arms", "lora", "--peft", "lora"], None),                  # the arm's own value: harmless
    (["--arms", "id,full", "--seed", "7"], None),                  # a value no arm sets
])
def test_q4_refuses_an_override_that_contradicts_a_chosen_arm(common, tmp_path, monkeypatch, argv, refused):
    """`--arms full --peft lora` once ran the "full" arm with LoRA under the full arm's name."""
    import study_q4_adaptation
    seen = {}
    monkeypatch.setattr(study_q4_adaptation, "run_study",
                        lambda name, title, parts, args, overrides, *rest: seen.update(parts=parts, overrides=overrides))
    if refused:
        with pytest.raises(InputError, match="choose arms with --arms") as error:
            study_q4_adaptation.main([*argv, "--out", str(tmp_path), "--table_only"])
        assert refused in str(error.value)
    else:
        study_q4_adaptation.main([*argv, "--out", str(tmp_path), "--table_only"])
        for cfg, _ in common.study_runs(seen["parts"], seen["overrides"], tmp_path):
            assert cfg.peft == ("lora" if "lora" in argv[1] else "none")


def test_q4_tables_each_arm_against_full_fine_tuning_from_that_arms_own_runs(common, tmp_path, monkeypatch):
    """study_q4_adaptation writes q4_adaptation_vs_full.md: each arm against full fine-tuning,
    paired by seed. Known answer on 40 users (HR@10 in percent): full hits everyone; top2 misses
    10 + s users at seed s (Δ -27.5, -30, -32.5: mean -30.00); top2_cached, whose values differ
    from top2's only in cache_frozen_layers, misses s users (mean Δ -5.00) and keeps its own 3
    runs; without full runs there is no such table."""
    import dataclasses
    import json

    import numpy as np
    import study_q4_adaptation
    from morec.report.run_files import load_run
    from test_results_table import fake_ranks, fake_run
    seen = {}
    monkeypatch.setattr(study_q4_adaptation, "run_study",
                        lambda name, title, parts, args, overrides, then: seen.update(parts=parts, overrides=overrides,
                                                                                      then=then))
    study_q4_adaptation.main(["--arms", "full,top2,top2_cached", "--out", str(tmp_path), "--table_only"])
    misses = {"full": lambda s: 0, "top2": lambda s: 10 + s, "top2_cached": lambda s: s}
    users = [f"u{i}" for i in range(40)]
    runs = []
    for arm, part in zip(misses, seen["parts"]):
        for cfg, run_dir in common.study_runs([part], seen["overrides"], tmp_path / "runs"):
            run = fake_run(run_dir.parent, run_dir.name, json.loads(json.dumps(dataclasses.asdict(cfg), default=str)), 0, 0)
            fake_ranks(run, np.where(np.arange(40) < misses[arm](cfg.seed), 50, 0), np.zeros(40), users=users)
            runs.append(load_run(run))
    seen["then"](runs, tmp_path)
    table = (tmp_path / "q4_adaptation_vs_full.md").read_text()
    assert "| top2 | 3 | 70.00 | -30.00 [" in table and "| top2_cached | 3 | 95.00 | -5.00 [" in table
    assert "| full |" not in table and "paired t, 3 seeds x 40 users" in table
    (tmp_path / "q4_adaptation_vs_full.md").unlink()
    assert seen["then"](runs[3:], tmp_path) is None                   # full's 3 runs (the first arm) left out
    assert not (tmp_path / "q4_adaptation_vs_full.md").exists()
