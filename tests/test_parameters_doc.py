"""docs/parameters.md says what morec.config.Config holds: every field is named there (as `name`);
every fixed choice set of morec.config_checks.RULES (`_one_of`) is listed in full where the field
is named, and no choice list offers a value the rule refuses; every field has a row in a
`| field | default |` table, with the code's default; the paragraph starting "Run control" names
exactly morec.config.RUN_CONTROL (the fields kept out of the run label). README.md,
docs/workflow.md and parameters.md write only flags that exist: each `python SCRIPT ... --flag` is
an option of that script (train / test scripts: a Config field), and every other `--flag` is a
Config field or some script's option."""
import ast
import re
from dataclasses import fields

import pytest

from conftest import REPO
from morec.config import RUN_CONTROL, Config
from morec.config_checks import RULES

DOC = REPO / "docs" / "parameters.md"
FIELDS = {f.name: f.default for f in fields(Config)}
SPAN = re.compile(r"`([^`\n]+)`")
# two or more backticked values with only a separator between them: `a` | `b`, `a`, `b` or `b`
CHOICE_LIST = re.compile(r"`[^`\n]+`(?:\s*(?:\\?\||,|/|or)\s*`[^`\n]+`)+")


def choice_fields() -> dict[str, tuple[str, ...]]:
    """{field: its choices} for every field whose rule is morec.config_checks._one_of(...)."""
    return {name: rule.__closure__[0].cell_contents for name, rule in RULES.items()
            if rule.__qualname__.startswith("_one_of.")}


def units(text: str) -> list[str]:
    """The doc cut where a reader's eye stops: paragraphs, each list item and each table row alone."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        current: list[str] = []
        for line in block.splitlines():
            if line.startswith(("|", "- ", "* ")) and current:
                out.append(" ".join(current))
                current = []
            if line.startswith("|"):                    # cells apart: no choice list runs across them
                out.append(" ; ".join(cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]))
                continue
            current.append(line.strip())
        if current:
            out.append(" ".join(current))
    return out


def named(span: str) -> str:
    """The field a backticked span names: its first word without dashes (`--lr 1e-3`, `lr = x`)."""
    return re.split(r"[\s=|]", span.strip(), maxsplit=1)[0].lstrip("-").replace("-", "_")


def span_values(span: str) -> set[str]:
    """The words of a backticked span (`peft lora|ia3` gives peft, lora, ia3)."""
    return {word for word in re.split(r"[\s|]+", span.strip()) if word}


def field_named_in(doc_units: list[str], name: str) -> list[str]:
    return [unit for unit in doc_units if any(named(span) == name for span in SPAN.findall(unit))]


def undocumented_fields(text: str) -> list[str]:
    spans = {named(span) for span in SPAN.findall(text)}
    return [name for name in FIELDS if name not in spans]


def missing_choices(text: str) -> dict[str, list[str]]:
    """{field: its choices} where no paragraph, list item or table row naming the field lists them all."""
    doc_units = units(text)
    missing = {}
    for name, choices in choice_fields().items():
        listed = [set().union(*(span_values(span) for span in SPAN.findall(unit)))
                  for unit in field_named_in(doc_units, name)]
        if not any(set(choices) <= values for values in listed):
            missing[name] = sorted(set(choices) - max(listed, key=lambda v: len(v & set(choices)), default=set()))
    return missing


def stale_choices(text: str) -> dict[str, list[str]]:
    """{field: values} offered in a choice list after the field's name that the field's rule refuses.
    A choice list belongs to the last field named before it in the same unit; it counts as that
    field's when it holds at least one of the field's choices."""
    code = choice_fields()
    stale: dict[str, list[str]] = {}
    for unit in units(text):
        for match in CHOICE_LIST.finditer(unit):
            before = [named(span) for span in SPAN.findall(unit[:match.start()])]
            owner = next((name for name in reversed(before) if name in FIELDS), None)
            values = set().union(*(span_values(span) for span in SPAN.findall(match.group())))
            if owner in code and values & set(code[owner]):
                extra = sorted(values - set(code[owner]) - {owner})
                if extra:
                    stale.setdefault(owner, []).extend(extra)
    return stale


def default_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def table_defaults(text: str) -> dict[str, str]:
    """{field: its default cell's first word, backticks dropped} from every table with a `default`
    column whose rows start with a backticked field name."""
    stated = {}
    for table in re.findall(r"(?:^\|.*\n?)+", text, flags=re.M):
        rows = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in table.splitlines()]
        header = [cell.lower() for cell in rows[0]]
        if "default" not in header:
            continue
        column = header.index("default")
        for row in rows[2:]:
            name = named(row[0].strip("`")) if row[0].startswith("`") else None
            if name in FIELDS and column < len(row):
                stated[name] = (row[column].split() or [""])[0].strip("`")
    return stated


def wrong_defaults(text: str) -> dict[str, tuple[str, str]]:
    """{field: (doc, code)} for each table default that is not the code's."""
    wrong = {}
    for name, cell in table_defaults(text).items():
        code = FIELDS[name]
        if isinstance(code, (int, float)) and not isinstance(code, bool):
            same = re.fullmatch(r"-?[0-9.e+-]+", cell) is not None and float(cell) == code
        else:
            same = cell == (default_text(code) if code != "" else '""')
        if not same:
            wrong[name] = (cell, default_text(code))
    return wrong


def test_every_config_field_is_named_in_the_parameters_doc():
    assert not undocumented_fields(DOC.read_text(encoding="utf-8")), "fields docs/parameters.md does not name"


def test_the_parameters_doc_lists_every_choice_of_each_choice_field():
    assert not missing_choices(DOC.read_text(encoding="utf-8"))


def test_the_parameters_doc_offers_no_choice_the_code_refuses():
    assert not stale_choices(DOC.read_text(encoding="utf-8"))


def test_the_parameters_doc_tables_state_the_code_defaults():
    text = DOC.read_text(encoding="utf-8")
    assert not [name for name in FIELDS if name not in table_defaults(text)], "fields without a table row"
    assert not wrong_defaults(text)


def test_the_run_control_paragraph_names_exactly_the_fields_kept_out_of_the_label():
    [paragraph] = [unit for unit in units(DOC.read_text(encoding="utf-8")) if unit.startswith("Run control")]
    assert {named(span) for span in SPAN.findall(paragraph)} & set(FIELDS) == RUN_CONTROL


def test_the_checks_catch_a_missing_field_a_wrong_choice_and_a_wrong_default():
    """The checks on a doc whose errors are known: a field left out, a choice list with one choice
    missing and a stale one, a wrong default in a table."""
    text = DOC.read_text(encoding="utf-8")
    assert undocumented_fields(text.replace("`log_every`", "log_every")) == ["log_every"]
    broken = text + ("\n\nLosses: `loss` (`inbatch` | `bpr`).\n\n| field | default | values |\n|---|---|---|\n"
                     "| `lr` | 0.01 | > 0 |\n| `lr_schedule` | `none` | `none`, `cosine`, `linear` |\n")
    assert stale_choices(broken) == {"loss": ["bpr"], "lr_schedule": ["linear"]}
    assert wrong_defaults(broken) == {"lr": ("0.01", "0.001")}
    without = "\n\n".join(unit for unit in units(text) if "`inbatch`" not in unit or "`bce`" not in unit)
    assert missing_choices(without + "\n\n`loss` (`inbatch` | `bpr`)\n") == {"loss": ["bce"]}


# --- flags written in the docs ---

SCRIPT_DIRS = ("scripts", "pretrained_models", "dataset")
COMMAND = re.compile(r"python\s+(?:-m\s+\S+\s+)?([\w./-]+\.py)((?:[ \t]+(?:\\\n\s*)?[^\s`]+)*)")


def argparse_options(source: str) -> set[str]:
    """Every '--option' string passed to an `add_argument(...)` call in this Python source (all of
    a call's names, e.g. both of `add_argument("-o", "--out")`), read from its syntax tree."""
    return {arg.value for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            and arg.value.startswith("--")}


def script_options(path) -> set[str]:
    """The --options a script parses: its argparse options, the study options of study_common
    when it is a study, and every Config field (and --id./--mo. ones) when it reads overrides."""
    text = path.read_text(encoding="utf-8")
    options = argparse_options(text)
    if "study_common" in text:
        options |= script_options(REPO / "scripts" / "study_common.py")
    if "parse_overrides" in text or "morec.launch import main" in text or "study_common" in text:
        options |= {f"--{name}" for name in FIELDS}
    return options


def accepted(flag: str, options: set[str]) -> bool:
    tower = re.fullmatch(r"--(?:id|mo)\.(\w+)", flag)           # a study's per-tower value
    return flag.replace("-", "_") in {option.replace("-", "_") for option in options} or (
        tower is not None and tower.group(1) in FIELDS)


def all_script_options() -> set[str]:
    paths = [p for folder in SCRIPT_DIRS for p in (REPO / folder).rglob("*.py")]
    return set().union(*(script_options(p) for p in paths)) | {f"--{name}" for name in FIELDS}


def flags(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[A-Za-z][\w.-]*\w", text))


def stale_flags(text: str, everything: set[str]) -> list[str]:
    """'SCRIPT --flag' for each flag of a `python SCRIPT ...` command that SCRIPT does not take,
    then '--flag' for every other flag that no script takes and no Config field is."""
    wrong = []
    for script, args in COMMAND.findall(text):
        path = REPO / script
        if path.is_file():
            wrong += [f"{script} {flag}" for flag in sorted(flags(args)) if not accepted(flag, script_options(path))]
    return wrong + [flag for flag in sorted(flags(text)) if not accepted(flag, everything)]


@pytest.mark.parametrize("doc", ["README.md", "docs/workflow.md", "docs/parameters.md"])
def test_the_flags_the_docs_write_exist(doc):
    assert not stale_flags((REPO / doc).read_text(encoding="utf-8"), all_script_options())


def test_argparse_options_reads_every_name_of_a_call_and_nothing_else():
    source = ('parser.add_argument("-o", "--out", help="--not_an_option")\n'
              "add_argument('--seed', type=int)\n"
              'p.add_argument(\n    "--runs_dir",\n    default="--x")\n'
              'parser.add_argument_group("--group")\n# add_argument("--commented")\n')
    assert argparse_options(source) == {"--out", "--seed", "--runs_dir"}


def test_the_flag_check_catches_a_stale_flag():
    everything = all_script_options()
    text = ("`python scripts/results_table.py runs --out T --seeds 3` and "
            "`python inbatch_sasrec_e2e_text/train_id.py --lr 1e-3 --out X`; also `--no_such_flag`, "
            "`--id.lr 1e-4`, `--mo.no_such 1`.")
    assert stale_flags(text, everything) == ["scripts/results_table.py --seeds",        # not that script's
                                             "inbatch_sasrec_e2e_text/train_id.py --out",  # not a Config field
                                             "--mo.no_such", "--no_such_flag", "--seeds"]  # no script's
