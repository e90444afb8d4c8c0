"""Security: no data file is unpickled, every torch.load is weights_only, no remote code,
nothing is downloaded. Checked over the whole source tree, so a new file cannot slip past."""
import re

from conftest import REPO

SOURCES = [p for p in REPO.rglob("*.py") if "tests" not in p.parts and ".git" not in p.parts]


def lines_matching(pattern: str) -> list[str]:
    regex = re.compile(pattern)
    return [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
            for path in SOURCES for number, line in enumerate(path.read_text().splitlines(), 1)
            if regex.search(line) and not line.lstrip().startswith("#")]


def test_the_tree_has_sources():
    assert len(SOURCES) > 30 and any(p.name == "train.py" for p in SOURCES)


def test_torch_load_always_weights_only():
    assert [line for line in lines_matching(r"torch\.load\(") if "weights_only=True" not in line] == []


def test_no_plain_unpickling():
    # the one unpickler is the restricted legacy-LMDB reader in morec/tools/legacy_lmdb.py
    offenders = [line for line in lines_matching(r"pickle\.(loads?|Unpickler)\b")
                 if "Restricted" not in line and "morec/tools/legacy_lmdb.py" not in line]
    assert offenders == []


def test_no_remote_code_and_no_downloads():
    assert lines_matching(r"trust_remote_code\s*=\s*True") == []
    calls = [(path, text[m.start():m.start() + 250]) for path in SOURCES   # the call and its next lines
             for text in [path.read_text()] for m in re.finditer(r"\.from_pretrained\(", text)]
    assert calls, "the encoder loaders should be found"
    assert [(path.name, call) for path, call in calls if "local_files_only=True" not in call] == []
    assert lines_matching(r"\b(urlopen|requests\.get|hf_hub_download|snapshot_download)\b") == []
