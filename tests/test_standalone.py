"""The repository stands alone: nothing it tracks (code, configs, tests, docs, benchmarks) names a folder beside
it, so a plain clone reads only itself, installed packages and what a user names on the command line. The data
it needs ships in corpora/ (corpora/README.md). .ci/run runs the suite in a fresh clone with nothing beside it.
Inside, the files import each other without circles (each command line lives in its own file)."""
import ast
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


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The repository's modules that `path` imports anywhere (top level or inside a function)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names & modules - {path.stem}


def test_no_import_circles_between_the_files():
    """A circle means a library file hosts the command line of a file split off from it (or two concerns that
    belong together live apart): none of the top-level files reaches itself through its imports."""
    modules = {p.stem for p in ROOT.glob("*.py")}
    graph = {m: _imports(ROOT / f"{m}.py", modules) for m in modules}
    assert len(graph) > 20 and "checkpoint" in graph["train"]
    circles = []
    for start in sorted(modules):
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        if start in seen:
            circles.append(start)
    assert not circles, f"these files import themselves through other files: {circles}"
