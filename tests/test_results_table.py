"""scripts/results_table.py and scripts/plot_runs.py on fake run folders whose answer is known."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import plot_runs  # noqa: E402
from morec.errors import InputError  # noqa: E402
from morec.report.rows import table_rows  # noqa: E402
from morec.report.run_files import load_runs  # noqa: E402
from morec.report.significance import bootstrap_interval, mean_difference, sign_flip_p  # noqa: E402
from morec.report.table_text import markdown  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(root, name, config, hr, ndcg, cold=None, epochs=3, tested=True):
    """A run folder as train_*.py + test_*.py leave it (only the files the table reads)."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"dataset": "toy", **config}))
    history = [{"epoch": e, "train_loss": 5.0 - e, "valid": {"HR@10": 0.01 * e, "NDCG@10": 0.005 * e}}
               for e in range(1, epochs + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if tested:
        result = {"label": name, "best_epoch": epochs, "valid": history[-1]["valid"],
                  "test": {"HR@10": hr, "NDCG@10": ndcg}}
        if cold is not None:
            result["cold_start"] = {"below": 1, "users": 4, "metrics": {"HR@10": cold, "NDCG@10": cold / 2}}
        (run / "test_metrics.json").write_text(json.dumps(result))
    return run


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "exp" / "runs"
    # IDRec, three seeds; the first run is an old one whose config lacks the newer keys
    fake_run(root, "id-s1", {"item_tower": "id", "seed": 1}, 0.10, 0.05, cold=0.0)
    fake_run(root, "id-s2", {"item_tower": "id", "seed": 2, "warm_min_count": 0, "two_stage": False}, 0.12, 0.06, cold=0.0)
    fake_run(root, "id-s3", {"item_tower": "id", "seed": 3}, 0.14, 0.07, cold=0.0)
    # text E2E, two seeds
    text = {"item_tower": "text", "bert_model_load": "enc"}
    fake_run(root, "text-s1", {**text, "seed": 1}, 0.15, 0.08, cold=0.25)
    fake_run(root, "text-s2", {**text, "seed": 2}, 0.13, 0.06, cold=0.75)
    # two-stage with 8 DNN layers, one seed; and an untested run
    fake_run(root, "ts8-s1", {**text, "two_stage": True, "dnn_layers": 8, "seed": 1}, 0.09, 0.03)
    fake_run(root, "ts8-s2", {**text, "two_stage": True, "dnn_layers": 8, "seed": 2}, 0.5, 0.5, tested=False)
    # warm-20: its own ID and text rows
    fake_run(root, "wid-s1", {"item_tower": "id", "warm_min_count": 20, "seed": 1}, 0.20, 0.10)
    fake_run(root, "wtext-s1", {**text, "warm_min_count": 20, "seed": 1}, 0.18, 0.12)
    return tmp_path / "exp"


def test_rows_mean_std_and_improvement(runs_root, capsys):
    runs = load_runs([runs_root])
    assert "left out 1 run(s)" in capsys.readouterr().err                 # ts8-s2
    rows = {(r["setting"], r["item_tower"], r["mode"]): r for r in table_rows(runs)}
    assert list(rows) == [("regular", "ID", "E2E"), ("regular", "text: enc", "E2E"),
                          ("regular", "text: enc", "TS dnn=8"), ("warm-20", "ID", "E2E"),
                          ("warm-20", "text: enc", "E2E")]
    idrec = rows["regular", "ID", "E2E"]
    assert idrec["n"] == 3 and idrec["seeds"] == "1 2 3"                   # old and new configs group
    assert idrec["hr10_mean"] == pytest.approx(12.0) and idrec["hr10_std"] == pytest.approx(2.0)
    assert idrec["ndcg10_mean"] == pytest.approx(6.0) and idrec["ndcg10_std"] == pytest.approx(1.0)
    assert math.isnan(idrec["hr10_vs_id_pct"])
    text = rows["regular", "text: enc", "E2E"]
    assert text["hr10_mean"] == pytest.approx(14.0) and text["hr10_std"] == pytest.approx(math.sqrt(2))
    assert text["hr10_vs_id_pct"] == pytest.approx(100 * 2 / 12)            # +16.7 %
    assert text["ndcg10_vs_id_pct"] == pytest.approx(100 * (7 - 6) / 6)
    assert text["cold_hr10_mean"] == pytest.approx(50.0) and text["cold_users"] == 4
    ts = rows["regular", "text: enc", "TS dnn=8"]
    assert ts["n"] == 1 and ts["hr10_mean"] == pytest.approx(9.0) and math.isnan(ts["hr10_std"])
    warm = rows["warm-20", "text: enc", "E2E"]                             # against the warm-20 IDRec
    assert warm["hr10_vs_id_pct"] == pytest.approx(-10.0) and warm["ndcg10_vs_id_pct"] == pytest.approx(20.0)

    md = markdown(list(rows.values()))
    assert "| toy | regular | sasrec | inbatch | ID | E2E | 3 | 12.00 ± 2.00 | 6.00 ± 1.00 | - | - |" in md
    assert "| 14.00 ± 1.41 | 7.00 ± 1.41 | +16.7% | +16.7% | 50.00 ± 35.36 (4) |" in md
    assert "| 9.00 | 3.00 | -25.0% | -50.0% | - |" in md                     # one seed: no ±


def test_cli_writes_markdown_and_csv(runs_root, tmp_path):
    out = tmp_path / "tables" / "toy"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), str(runs_root),
                             "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out.with_suffix(".md")).read_text().count("\n| toy |") == 5
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["hr10_mean"]) for r in rows] == [12.0, 14.0, 9.0, 20.0, 18.0]
    assert rows[0]["hr10_std"] == "2.0" and rows[2]["hr10_std"] == "" and rows[0]["runs"] == "id-s1 id-s2 id-s3"
    empty = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), str(tmp_path / "tables")],
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2 and empty.stderr.startswith("error: no tested run under")


def test_bad_run_file_is_a_clear_error(runs_root):
    (runs_root / "runs" / "id-s1" / "test_metrics.json").write_text("{not json")
    with pytest.raises(InputError, match=r"id-s1/test_metrics.json cannot be read as JSON"):
        load_runs([runs_root], quiet=True)


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.pyplot as plt
    image = plt.imread(path)                              # decodes: a valid PNG, not only a header
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_plots_are_valid_pngs(runs_root, tmp_path):
    curves = plot_runs.plot_curves([runs_root], tmp_path / "fig" / "curves.png")
    assert_png(curves)
    rows = table_rows(load_runs([runs_root], quiet=True))
    assert_png(plot_runs.plot_bars(rows, tmp_path / "fig" / "bars.png"))
    with pytest.raises(InputError, match="no valid HR@99"):
        plot_runs.plot_curves([runs_root], tmp_path / "x.png", metric="HR@99")


def test_study_chains_runs_then_table_and_figures(tmp_path, capsys):
    """study_q3 at toy size (tiny random encoder, one epoch): every run is trained and tested, the
    table has one row per tower/mode (IDRec with two seeds), a second call skips every run."""
    from text_helpers import tiny_encoders
    import study_q3_ts_vs_e2e
    argv = ["--out", str(tmp_path / "out"), "--dnn", "1", "--seed", "1", "--id.seed", "1,2", "--epoch", "1",
            "--max_seq_len", "3", "--embedding_dim", "16", "--batch_size", "512",
            "--pretrained_dir", str(tiny_encoders()), "--bert_model_load", "random_tiny_bert",
            "--cache_dir", str(tmp_path / "cache"), "--mo.lr", "0.002", "--progress", "false"]
    study_q3_ts_vs_e2e.main(argv)
    out = capsys.readouterr().out
    assert out.count(": training") == 4 and out.count("\ntest HR@10 ") == 4
    csv_rows = list(csv.DictReader(open(tmp_path / "out" / "q3_ts_vs_e2e.csv", newline="")))
    assert [(r["item_tower"], r["mode"], r["seeds"]) for r in csv_rows] == [
        ("ID", "E2E", "1 2"), ("text: random_tiny_bert", "E2E", "1"), ("text: random_tiny_bert", "TS dnn=1", "1")]
    configs = [json.loads((tmp_path / "out" / "runs" / label / "config.json").read_text())
               for r in csv_rows for label in r["runs"].split()]
    assert [c["lr"] for c in configs] == [0.001, 0.001, 0.002, 0.002]            # --mo.lr: MoRec runs only
    for name in ("q3_ts_vs_e2e_bars.png", "q3_ts_vs_e2e_curves.png"):
        assert_png(tmp_path / "out" / name)
    study_q3_ts_vs_e2e.main(argv)
    assert capsys.readouterr().out.count(": done") == 4
    study_q3_ts_vs_e2e.main(argv + ["--cold_start_count", "2"])           # another view: test again only
    out = capsys.readouterr().out
    assert out.count(": testing") == 4 and ": training" not in out
    assert "cold-start view (test targets with < 2 train interactions" in out


def test_study_with_vision_morec_on_posters(tmp_path, capsys):
    """--modality vision: the MoRec runs use the image tower (--encoders names vision encoders);
    the IDRec run's label ignores the vision values, so it is the plain ID run."""
    from morec.config import Config, run_label
    from vision_helpers import IMAGE_SIZE, TINY_VISION, poster_root, tiny_vision_encoders
    import study_q1_morec_vs_idrec
    argv = ["--out", str(tmp_path / "out"), "--warm", "0", "--seed", "1", "--epoch", "1", "--modality", "vision",
            "--encoders", TINY_VISION["swin"], "--root_data_dir", str(poster_root()), "--image_lmdb", "posters.lmdb",
            "--image_size", str(IMAGE_SIZE), "--pretrained_dir", str(tiny_vision_encoders()),
            "--embedding_dim", "16", "--batch_size", "512", "--progress", "false"]
    study_q1_morec_vs_idrec.main(argv)
    assert capsys.readouterr().out.count("\ntest HR@10 ") == 2
    csv_rows = list(csv.DictReader(open(tmp_path / "out" / "q1_morec_vs_idrec.csv", newline="")))
    assert [(r["item_tower"], r["mode"]) for r in csv_rows] == [("ID", "E2E"), (f"vision: {TINY_VISION['swin']}", "E2E")]
    id_config = json.loads((tmp_path / "out" / "runs" / csv_rows[0]["runs"] / "config.json").read_text())
    plain = {k: v for k, v in id_config.items() if k not in ("cv_model_load", "image_lmdb", "image_size",
                                                             "pretrained_dir", "bert_model_load",
                                                             "trainable_layers", "fine_tune_lr",
                                                             "fine_tune_l2_weight", "news_attributes",
                                                             "data_identity", "setting")}
    assert csv_rows[0]["runs"] == run_label(Config(**plain))


# ----------------------------------------------------------------------------- paired statistics

def fake_ranks(run, h, t, users=None):
    """The test_ranks.npz test_*.py writes, and test_metrics.json made to agree with it."""
    from morec.evaluate import metrics_from_counts
    import numpy as np
    import torch
    users = [f"u{i}" for i in range(len(h))] if users is None else users
    np.savez(run / "test_ranks.npz", h=np.asarray(h, dtype=np.int64), t=np.asarray(t, dtype=np.int64),
             user=np.array(users, dtype=str))
    result = json.loads((run / "test_metrics.json").read_text())
    result.update(test=metrics_from_counts(torch.tensor(np.stack([h, t], 1))), ties="expected",
                  per_user="test_ranks.npz", num_users=len(h))
    (run / "test_metrics.json").write_text(json.dumps(result))


def latent_ndcg(rng, z, sigma, delta):
    """Synthetic per-user NDCG@10 (percent) of one run: score = z + sigma * noise + delta, the
    target's rank is 1 + floor(exp(4 - 2 score)); z (users,) is the users' shared difficulty."""
    import numpy as np
    score = z + sigma * rng.standard_normal(z.shape) + delta
    h = np.floor(np.exp(np.minimum(4.0 - 2.0 * score, 30.0)))
    return np.where(h < 10, 100.0 / np.log2(h + 2), 0.0)


def planted_shift(sigma, gain):
    """The delta whose expected NDCG@10 is (1 + gain) x that of delta = 0 (exact: score is normal
    with sd sqrt(1 + sigma^2) and h = k for score in ((4 - ln(k+1))/2, (4 - ln k)/2])."""
    import numpy as np
    from scipy import optimize, stats
    tau, k = math.sqrt(1 + sigma ** 2), np.arange(10)
    low, high = (4 - np.log(k + 1)) / 2, np.append(np.inf, (4 - np.log(k[1:])) / 2)

    def expected(delta):
        return np.sum((stats.norm.cdf((high - delta) / tau) - stats.norm.cdf((low - delta) / tau)) / np.log2(k + 2))
    return optimize.brentq(lambda d: expected(d) / expected(0.0) - 1 - gain, 0.0, 1.0)


def simulated_p_values(delta, users=6000, seeds=3, sigma=0.5, simulations=100, resamples=199, budget=0):
    """p-values of 100 paired per-user sign flips of synthetic runs (seeds pooled, as the per-user
    test pools them; per-user NDCG of two runs correlates ~0.67 at sigma 0.5). budget 0: the sign-flip
    test's normal approximation. These runs have NO run-level term: the per-user sign flip holds its
    level only then; tests/test_significance.py shows it failing once runs vary as real seeds do."""
    import numpy as np
    rng = np.random.default_rng(20261130)
    p_values = []
    for _ in range(simulations):
        z = np.repeat(rng.standard_normal((1, users)), seeds, 0)         # (seeds, users): same users
        base, other = latent_ndcg(rng, z, sigma, 0.0), latent_ndcg(rng, z, sigma, delta)
        p_values.append(sign_flip_p(other.ravel(), base.ravel(), resamples, budget=budget))
    return np.array(p_values)


@pytest.mark.parametrize("users, budget", [(6000, 0), (943, 2e7)])   # normal approximation; resampling
def test_sign_flip_holds_its_level_on_fixed_runs_without_a_run_term(users, budget):
    p = simulated_p_values(delta=0.0, users=users, budget=budget)
    assert (p > 0.05).sum() >= 93


def test_sign_flip_finds_a_five_percent_per_user_gain_on_6000_users():
    delta = planted_shift(sigma=0.5, gain=0.05)
    p = simulated_p_values(delta)
    assert (p < 0.05).sum() >= 80


def test_sign_flip_p_agrees_with_scipy_permutation_test():
    import numpy as np
    from scipy import stats
    rng = np.random.default_rng(7)
    z = rng.standard_normal(1500)
    for delta in (0.0, 0.05, 0.1):
        a, b = latent_ndcg(rng, z, 0.5, delta), latent_ndcg(rng, z, 0.5, 0.0)
        exact = stats.permutation_test((a, b), mean_difference, permutation_type="samples",
                                       vectorized=True, n_resamples=4999, rng=rng).pvalue
        noise = math.sqrt(max(exact * (1 - exact), 0.01) / 4999)       # sd of a 4999-resample p-value
        assert sign_flip_p(a, b, budget=0) == pytest.approx(exact, abs=4 * noise + 0.005)
        assert sign_flip_p(a, b, 4999, seed=1) == pytest.approx(exact, abs=4 * math.sqrt(2) * noise)
    assert sign_flip_p(a, a) == 1.0


def test_bootstrap_interval_covers_the_true_difference():
    """95% intervals of identical runs contain 0 in >= 88 of 100 simulations (200 simulations
    measured 95%; below 88 of 100 has probability 0.4% at the nominal 95%)."""
    import numpy as np
    rng = np.random.default_rng(11)
    covered = 0
    for seed in range(100):
        z = rng.standard_normal(3000)
        a, b = latent_ndcg(rng, z, 0.5, 0.0), latent_ndcg(rng, z, 0.5, 0.0)
        low, high = bootstrap_interval(a, b, resamples=199, seed=seed)
        covered += low <= 0 <= high
        assert low < np.mean(a - b) < high
    assert covered >= 88


@pytest.fixture
def paired_root(tmp_path):
    """ID and text rows with two seeds and per-user files; the text runs hit 30 more users of 400."""
    import numpy as np
    root = tmp_path / "exp" / "runs"
    text = {"item_tower": "text", "bert_model_load": "enc"}
    for seed in (1, 2):
        h_id = np.where(np.arange(400) % 4 == 0, 0, 50)                     # 100 hits at rank 1
        h_text = h_id.copy()
        h_text[1:120:4] = 0                                                  # 30 more hits
        fake_ranks(fake_run(root, f"id-s{seed}", {"item_tower": "id", "seed": seed}, 0, 0), h_id, np.zeros(400))
        fake_ranks(fake_run(root, f"text-s{seed}", {**text, "seed": seed}, 0, 0), h_text, np.zeros(400))
    return tmp_path / "exp"


def test_rows_get_paired_differences_against_idrec(paired_root):
    rows = table_rows(load_runs([paired_root]), resamples=499)
    idrec, text = rows
    assert idrec["test"] == "" and math.isnan(idrec["hr10_diff"])
    assert text["test"] == "paired t, 2 seeds x 400 users" and text["compared_seeds"] == "1 2"
    assert text["hr10_diff"] == pytest.approx(100 * 30 / 400)
    assert text["ndcg10_diff"] == pytest.approx(100 * 30 / 400)
    assert text["hr10_ci_low"] <= 7.5 <= text["hr10_ci_high"] and text["hr10_p"] == 0.0   # the same gain in both seeds
    assert text["hr10_user_diff"] == pytest.approx(7.5) and text["hr10_user_p"] == pytest.approx(1 / 500)  # 30 users, all +
    md = markdown(rows)
    assert "| paired t, 2 seeds x 400 users | +7.50 [+" in md and " *" in md.splitlines()[3]
    assert "p < 0.002" in md.splitlines()[3]


def test_seeds_of_one_row_only_are_named_in_numeric_order(paired_root):
    """A row with seeds 1 2 9 10 against a base with 1 2: the note names 9 10 in that order."""
    import numpy as np
    root = paired_root / "runs"
    for seed in (9, 10):
        fake_ranks(fake_run(root, f"text-s{seed}", {"item_tower": "text", "bert_model_load": "enc", "seed": seed}, 0, 0),
                   np.full(400, 50), np.zeros(400))
    text = table_rows(load_runs([paired_root]), resamples=99)[1]
    assert text["test"] == "paired t, 2 seeds x 400 users (seeds 9 10 of one row only left out)"


def test_stale_per_user_file_is_refused(paired_root):
    import numpy as np
    run = paired_root / "runs" / "text-s2"
    np.savez(run / "test_ranks.npz", h=np.zeros(400, dtype=np.int64), t=np.zeros(400, dtype=np.int64),
             user=np.array([f"u{i}" for i in range(400)]))
    with pytest.raises(InputError, match="text-s2/test_ranks.npz does not reproduce the metrics"):
        table_rows(load_runs([paired_root]), resamples=99)


def test_runs_differing_in_setting_patience_or_epoch_get_their_own_rows(tmp_path):
    root = tmp_path / "exp"
    fake_run(root, "a", {"item_tower": "id", "seed": 1}, 0.1, 0.05)
    fake_run(root, "b", {"item_tower": "id", "seed": 2, "setting": {"world_size": 1, "precision": "fp32"}}, 0.1, 0.05)
    fake_run(root, "c", {"item_tower": "id", "seed": 1, "setting": {"world_size": 2, "precision": "fp32"}}, 0.1, 0.05)
    fake_run(root, "d", {"item_tower": "id", "seed": 1, "setting": {"world_size": 1, "precision": "bf16"}}, 0.1, 0.05)
    fake_run(root, "e", {"item_tower": "id", "seed": 1, "patience": 7}, 0.1, 0.05)
    fake_run(root, "f", {"item_tower": "id", "seed": 1, "epoch": 50}, 0.1, 0.05)
    fake_run(root, "g", {"item_tower": "id", "seed": 3, "device": "cuda:1", "eval_batch_size": 64}, 0.1, 0.05)
    rows = table_rows(load_runs([root]))
    assert sorted(r["runs"] for r in rows) == ["a b g", "c", "d", "e", "f"]
