"""tests/README.md maps README promises to tests: every `file::test` it names must exist, and so must every
test file and test named alone (`test_checkpoint (all)`, `test_x_*`), so the map cannot silently point at
renamed, moved or deleted tests."""
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_named_in_the_map_exists():
    text = (TESTS / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(test_\w+)::(test_\w+)", text))
    assert len(named) > 50
    missing = [f"{f}::{t}" for f, t in sorted(named)
               if not (TESTS / f"{f}.py").is_file()
               or not re.search(rf"^(?:async )?def {t}\(", (TESTS / f"{f}.py").read_text(encoding="utf-8"), re.M)]
    assert not missing, f"tests/README.md names tests that do not exist: {missing}"


def test_every_test_file_and_test_named_alone_exists():
    text = (TESTS / "README.md").read_text(encoding="utf-8")
    files = {p.stem for p in TESTS.glob("test_*.py")}
    tests = {t for p in TESTS.glob("*.py")
             for t in re.findall(r"^(?:async )?def (test_\w+)\(", p.read_text(encoding="utf-8"), re.M)}
    named = set(re.findall(r"\b(test_\w+)(?!\w|\*)", text))
    prefixes = set(re.findall(r"\b(test_\w+)\*", text))
    missing = sorted(n for n in named if n not in files | tests)
    missing += sorted(p + "*" for p in prefixes if not any(t.startswith(p) for t in tests))
    assert not missing, f"tests/README.md names test files or tests that do not exist: {missing}"


def test_every_file_has_its_test_file_and_every_other_test_file_is_a_listed_suite():
    """`tests/test_<file>.py` tests `<file>.py`: each top-level .py file of the repository has its test file, and a
    test file named after no file is one of the cross-cutting suites listed in tests/README.md."""
    text = (TESTS / "README.md").read_text(encoding="utf-8")
    table = text.split("## Which file tests what", 1)[1].split("\n## ", 1)[0]
    suites = set(re.findall(r"^\| (test_\w+) \|", table, re.M))
    product = {p.stem for p in TESTS.parent.glob("*.py")}
    files = {p.stem.removeprefix("test_") for p in TESTS.glob("test_*.py")}
    assert not product - files, f"files without tests/test_<file>.py: {sorted(product - files)}"
    stray = sorted(f"test_{f}" for f in files - product if f"test_{f}" not in suites)
    assert not stray, f"test files named after no file and not listed as suites in tests/README.md: {stray}"
    assert not suites - {f"test_{f}" for f in files}, "tests/README.md lists suites that do not exist"
