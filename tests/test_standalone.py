"""The repository stands alone: nothing it tracks (code, configs, tests, docs, benchmarks) names a folder beside
it, so a plain clone reads only itself, installed packages and what a user names on the command line. The data
it needs ships in corpora/ (corpora/README.md). .ci/run runs the suite in a fresh clone with nothing beside it."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# built from parts, so that this file does not contain what it looks for
NEEDLES = [b"../" + b"shared", b"/work/" + b"shared"]
NEWLINE = b"\n"


def test_no_tracked_file_names_a_folder_beside_the_repo():
    p = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"not a git checkout: {p.stderr.decode(errors='replace').strip()}")
    files = [f for f in p.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    assert len(files) > 100 and "corpora/README.md" in files
    bad = []
    for f in files:
        body = (ROOT / f).read_bytes()
        bad += [f"{f}:{body[:body.find(n)].count(NEWLINE) + 1}" for n in NEEDLES if n in body]
    assert not bad, f"these tracked files name a folder outside the repository (ship the data in corpora/): {bad}"
