"""tests/README.md maps README promises to tests: every `file::test` it names must exist, so the map cannot
silently point at renamed or deleted tests."""
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
