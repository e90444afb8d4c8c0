"""The documentation holds together: the README is a short front door that keeps CI's test command,
every relative link in README.md and docs/ points at a file that exists (and a heading that exists,
for `page.md#anchor` links), no work-item numbers, and the study pages are written by the study
scripts (scripts/study_page.py) from their tables and the READING each study script holds."""
import re
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
STUDIES = ("q1_morec_vs_idrec", "q3_ts_vs_e2e", "q4_adaptation", "q5_multimodal", "q6_transfer", "ts_layers")


def doc_files() -> list:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(path) -> list[str]:
    """The relative links of a markdown file whose target file (or heading) does not exist."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)               # code blocks hold no links
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):                 # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        where = (path.parent / file_part).resolve() if file_part else path
        if not where.exists():
            broken.append(target)
        elif anchor and where.is_file() and where.suffix == ".md":
            headings = {slug(line.lstrip("#")) for line in where.read_text(encoding="utf-8").splitlines()
                        if line.startswith("#")}
            if anchor not in headings:
                broken.append(target)
    return broken


def test_every_relative_link_in_the_docs_points_at_a_file():
    broken = {str(p.relative_to(REPO)): b for p in doc_files() if (b := broken_links(p))}
    assert not broken, f"broken relative links: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org/x) ![fig](missing.png)\n"
                    "[gone](docs/nowhere.md) [bad anchor](there.md#no-such-heading) [self](#nothing)\n"
                    "```\n[in code](not/checked.md)\n```\n", encoding="utf-8")
    assert broken_links(page) == ["missing.png", "docs/nowhere.md", "there.md#no-such-heading", "#nothing"]


def test_no_work_item_numbers_in_the_docs_or_the_code():
    files = [*doc_files(), *(REPO / "dataset").glob("*/README*"), REPO / "pretrained_models" / "README.md",
             *(REPO / "morec").rglob("*.py"), *(REPO / "scripts").rglob("*.py"),
             *(p for p in REPO.glob("*/**/*.py") if p.parts[len(REPO.parts)].startswith(("bce_", "inbatch_")))]
    found = {str(p.relative_to(REPO)): m for p in files
             if (m := re.findall(r"issues? ?#?[0-9]+", p.read_text(encoding="utf-8"), flags=re.I))}
    assert not found, f"name the feature instead of the work item: {found}"


def test_the_readme_is_a_front_door_that_keeps_the_ci_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) < 16 * 1024
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    [command] = [line.strip() for line in ci.splitlines() if "pytest" in line and not line.startswith("#")]
    assert command in readme
    for study in sorted((REPO / "docs" / "studies").iterdir()):
        if study.is_dir():
            assert f"docs/studies/{study.name}/README.md" in readme, f"the results table links no page of {study.name}"
            assert (study / "README.md").is_file()


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_script_holds_its_reading(name):
    from study_page import reading, study_module
    module = study_module(name)
    assert module.READING, f"scripts/study_{name}.py has no READING"
    for modality in (module.READING if isinstance(module.READING, dict) else ["text"]):
        assert reading(name, modality).startswith(f"### Reading: {name}\n\n")
    assert not re.search(r"issues? ?#?[0-9]+", str(module.READING) + module.__doc__, flags=re.I)


def test_a_study_page_reads_its_own_data_set():
    """The reading of a study on another data set is READING_BY_DATASET's (ml-100k's would quote
    other results); a data set without one gets no reading rather than ml-100k's."""
    from study_page import reading
    amazon = reading("q4_adaptation", "text", "amazon-scientific")
    assert amazon.startswith("### Reading: q4_adaptation\n\n") and "Amazon" in amazon
    assert "Amazon" not in reading("q4_adaptation", "text", "ml-100k")
    assert reading("q4_adaptation", "text", "MIND") == "" and reading("q1_morec_vs_idrec", "text", "amazon-scientific") == ""


def fake_outputs(out, name: str, row: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(f"# {name} title\n\n| mode | HR@10 |\n|---|---|\n| {row} |\n\nA note.\n",
                                    encoding="utf-8")
    (out / f"{name}.csv").write_text("mode,HR@10\n", encoding="utf-8")
    (out / f"{name}_bars.png").write_bytes(b"\x89PNG fake")


def test_study_page_writes_command_settings_tables_figures_and_reading(tmp_path):
    from morec.config import make_config
    from study_page import write_page
    import study_q1_morec_vs_idrec
    import study_q3_ts_vs_e2e
    out = tmp_path / "studies" / "toy"
    configs = [make_config({"item_tower": tower, "seed": seed, "max_seq_len": 10}) for tower in ("id", "text")
               for seed in (1, 2)]
    fake_outputs(out, "q3_ts_vs_e2e", "TS dnn=2 | 10.48")
    page = write_page("q3_ts_vs_e2e", "Q3 toy", ["--dnn", "2", "--out", str(out), "--table_only"], configs, out)
    assert page == out / "README.md"
    text = page.read_text(encoding="utf-8").replace(" \\\n        ", " ")      # the command, unwrapped
    assert "## Q3 toy" in text and "Paper question 3: two-stage" in text                       # title, question
    assert f"    python scripts/study_q3_ts_vs_e2e.py --dnn 2 --out {out}\n" in text           # no --table_only
    assert "`max_seq_len` 10" in text and "`item_tower` id, text; `seed` 1, 2" in text        # settings
    assert "| TS dnn=2 | 10.48 |" in text and "**q3_ts_vs_e2e title**" in text                # the table, inline
    assert "[q3_ts_vs_e2e.md](q3_ts_vs_e2e.md)" in text and "[q3_ts_vs_e2e.csv](q3_ts_vs_e2e.csv)" in text
    assert "![q3_ts_vs_e2e_bars](q3_ts_vs_e2e_bars.png)" in text                              # figures
    assert study_q3_ts_vs_e2e.READING.splitlines()[0] in text                                  # the reading
    assert not broken_links(page)

    # a second study on the same page adds its own section; a re-run rewrites only its own
    fake_outputs(out, "q1_morec_vs_idrec", "E2E | 10.96")
    write_page("q1_morec_vs_idrec", "Q1 toy", ["--out", str(out)], configs, out)
    fake_outputs(out, "q3_ts_vs_e2e", "TS dnn=2 | 11.11")
    text = write_page("q3_ts_vs_e2e", "Q3 toy", ["--out", str(out)], configs, out).read_text(encoding="utf-8")
    assert "| TS dnn=2 | 11.11 |" in text and "10.48" not in text and "| E2E | 10.96 |" in text
    assert text.count("<!-- study: q3_ts_vs_e2e -->") == 1 and text.count("## Q1 toy") == 1
    assert study_q1_morec_vs_idrec.READING["text"].splitlines()[0] in text
    assert text.startswith("# Studies: toy\n")


def test_study_page_in_another_folder_links_into_the_output_folder(tmp_path):
    """--page: two output folders of one study (Q5's variants) on one page, the reading once."""
    from morec.config import make_config
    from study_page import write_page
    configs = [make_config({"item_tower": "text", "seed": 1})]
    page = tmp_path / "README.md"
    for variant in ("frozen", "trained"):
        fake_outputs(tmp_path / variant, "q5_multimodal", f"{variant} | 1.00")
        write_page("q5_multimodal", "Q5 toy", ["--out", str(tmp_path / variant)], configs, tmp_path / variant, page)
    text = page.read_text(encoding="utf-8")
    assert "## Q5 toy (`frozen/`)" in text and "## Q5 toy (`trained/`)" in text
    assert "[q5_multimodal.md](frozen/q5_multimodal.md)" in text and "](trained/q5_multimodal_bars.png)" in text
    assert text.count("### Reading: q5_multimodal") == 1
    assert text.index("(`trained/`)") < text.index("### Reading: q5_multimodal")
    assert not broken_links(page)


def test_a_study_rewrites_its_page_with_page_only(tmp_path, capsys):
    """The hook in study_common.run_study: --page_only writes the page from the tables in --out
    without training or tabulating (no runs exist)."""
    import study_q3_ts_vs_e2e
    out = tmp_path / "out"
    fake_outputs(out, "q3_ts_vs_e2e", "E2E | 9.99")
    study_q3_ts_vs_e2e.main(["--out", str(out), "--dnn", "0", "--seed", "1", "--page_only"])
    text = (out / "README.md").read_text(encoding="utf-8").replace(" \\\n        ", " ")
    assert "| E2E | 9.99 |" in text and f"python scripts/study_q3_ts_vs_e2e.py --out {out} --dnn 0 --seed 1\n" in text
    assert "(3 runs;" in text and not (out / "runs").exists()
