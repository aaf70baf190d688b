"""Every command in README.md and docs/*.md runs as written.

(a) Every `python X.py ...` and `torchrun ... X.py ...` in a code block or an inline code span names a script
    that exists and only `--keys` that the script's own `-h` lists (`python X.py COMMAND -h` for scripts with
    sub-commands; `sweep.py` also passes train.py's keys on to its runs). `-h` runs once per script and
    command, each script as __main__, all in one process.
(b) The code blocks marked `<!-- quick-test -->` (on the line before the block) really run, in a temporary
    folder that holds links to the repo's scripts and folders (corpora/ included) and nothing beside it, and
    exit 0. The quick blocks of one page run in order in one
    folder, so a later block may use what an earlier one wrote. `<!-- quick-test slow -->` marks a block
    that takes over ~10 s as slow.
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
QUICK = re.compile(r"<!--\s*quick-test(\s+slow)?\s*-->\s*$")
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<", "$(", "`", "do", "then"}
COMMAND_WORD = re.compile(r"^[a-z][a-z_]*$")  # `data.py prepare`, `ner.py train`: a sub-command


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def code_blocks(path: Path) -> list[dict]:
    """The fenced code blocks of a page: {lang, body, line, quick, slow}."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = QUICK.search(before)
        blocks.append(dict(lang=m.group(1), body=m.group(2), line=_line_of(text, m.start()) + 1,
                           quick=bool(marker), slow=bool(marker and marker.group(1))))
    return blocks


def inline_commands(path: Path) -> list[tuple[int, str]]:
    """`python ...` / `torchrun ...` inline code spans outside the fenced blocks, with their line."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text(encoding="utf-8"))
    return [(_line_of(text, m.start()), m.group(1)) for m in re.finditer(r"`((?:python|torchrun) [^`]+)`", text)]


def shell_lines(body: str, first_line: int) -> list[tuple[int, str]]:
    """The logical lines of a shell block (backslash continuations joined), with their first line number."""
    out, buf, start = [], "", first_line
    for i, line in enumerate(body.split("\n")):
        if not buf:
            start = first_line + i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append((start, buf))
        buf = ""
    return out


def script_uses(line: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) for every `python X.py ...` and `torchrun ... X.py ...` in one shell line;
    `python -c/-m ...` is not a script run. Unparseable lines (placeholders in prose) give nothing."""
    try:
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, "#"
        tokens = list(lex)
    except ValueError:
        return []
    uses = []
    for i, tok in enumerate(tokens):
        if tok in ("python", "python3") or tok.endswith("/python"):
            if i + 1 < len(tokens) and tokens[i + 1].endswith(".py"):
                j = i + 1
            else:
                continue
        elif tok == "torchrun":
            j = next((k for k in range(i + 1, len(tokens)) if tokens[k].endswith(".py")), None)
            if j is None:
                continue
        else:
            continue
        args = []
        for t in tokens[j + 1:]:
            if t in SEPARATORS:
                break
            args.append(t)
        uses.append((tokens[j], args))
    return uses


def _all_uses() -> list[tuple[str, int, str, list[str]]]:
    """(page, line, script, args) for every script run named anywhere in the README and docs/."""
    out = []
    for page in PAGES:
        name = page.relative_to(ROOT).as_posix()
        for b in code_blocks(page):
            if b["lang"] not in ("bash", "sh", "shell", ""):
                continue
            for n, line in shell_lines(b["body"], b["line"]):
                out += [(name, n, s, a) for s, a in script_uses(line)]
        for n, span in inline_commands(page):
            out += [(name, n, s, a) for s, a in script_uses(span)]
    return out


USES = _all_uses()


def _command_of(args: list[str]) -> str | None:
    return args[0] if args and COMMAND_WORD.match(args[0]) else None


def _keys(args: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0] for a in args if a.startswith("--") and len(a) > 2]


GROUPS = sorted({(s, _command_of(a) or "") for _, _, s, a in USES})


# Prints what `python SCRIPT [COMMAND] -h` prints for each (script, command) in argv, between markers: each script
# runs as __main__ (runpy, the same code path as the command line), all in one process so torch imports once.
_HELP_ALL = """
import contextlib, io, runpy, sys
root, pairs = sys.argv[1], sys.argv[2:]
sys.path.insert(0, root)
for pair in pairs:
    script, _, command = pair.partition(" ")
    sys.argv = [script, *([command] if command else []), "-h"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_path(root + "/" + script, run_name="__main__")
    except SystemExit:
        pass
    print("=== " + pair + "\\n" + out.getvalue())
"""


@pytest.fixture(scope="module")
def help_keys():
    """(script, command) -> the keys its -h lists; every -h runs once, all in one process started in an empty
    folder (so nothing lands in the repo)."""
    wanted = sorted({(s, _command_of(a) or "") for _, _, s, a in USES if _keys(a) and (ROOT / s).is_file()}
                    | {("train.py", "")})
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-c", _HELP_ALL, str(ROOT), *(f"{s} {c}".strip() for s, c in wanted)],
                           cwd=tmp, capture_output=True, text=True, timeout=600)
    texts = dict(part.split("\n", 1) for part in p.stdout.split("=== ")[1:])
    keys = {}
    for s, c in wanted:
        text = texts.get(f"{s} {c}".strip(), "")
        assert text.startswith("usage:"), f"`python {s} {c} -h` printed no usage: {text[:500]!r} {p.stderr[-2000:]}"
        keys[(s, c)] = set(re.findall(r"--(\w+)", text))
    for (s, c), k in keys.items():
        if s == "sweep.py":  # sweep.py hands every other --key=value to the train.py runs it starts
            k |= keys[("train.py", "")]
    return keys


def test_the_docs_name_commands():
    """The extraction works: the README and docs/ hold many script commands, train.py among them."""
    scripts = {s for _, _, s, _ in USES}
    assert len(USES) > 60 and {"train.py", "data.py", "clean.py", "sample.py", "ner.py"} <= scripts, scripts


@pytest.mark.parametrize("script,command", GROUPS, ids=[f"{s} {c}".strip() for s, c in GROUPS])
def test_commands_name_existing_scripts_and_their_keys(script, command, help_keys):
    uses = [(page, n, a) for page, n, s, a in USES if s == script and (_command_of(a) or "") == command]
    assert (ROOT / script).is_file(), f"{script} does not exist; named at " + \
        ", ".join(f"{p}:{n}" for p, n, _ in uses)
    wanted = {k for _, _, a in uses for k in _keys(a) if k != "h"}
    if not wanted:
        return
    listed = help_keys[(script, command)]
    bad = [f"{p}:{n}: --{k}" for p, n, a in uses for k in _keys(a) if k != "h" and k not in listed]
    assert not bad, f"`python {script} {command} -h` does not list these keys: {bad}"


QUICK_BLOCKS = [(page, b) for page in PAGES for b in code_blocks(page) if b["quick"]]


@pytest.fixture(scope="module")
def page_dirs(tmp_path_factory):
    """One working folder per page: the repo's scripts, config/, bench/, examples/ and corpora/ linked in, as in
    a plain clone (nothing beside it)."""
    dirs = {}

    def get(page: Path) -> Path:
        if page not in dirs:
            base = tmp_path_factory.mktemp(page.stem)
            work = base / "repo"
            work.mkdir()
            for entry in ROOT.iterdir():
                if entry.suffix == ".py" or entry.name in ("config", "bench", "examples", "evals", "corpora"):
                    (work / entry.name).symlink_to(entry)
            dirs[page] = work
        return dirs[page]
    return get


@pytest.mark.parametrize("page,block", [
    pytest.param(p, b, marks=[pytest.mark.slow] if b["slow"] else [],
                 id=f"{p.relative_to(ROOT).as_posix()}:{b['line']}")
    for p, b in QUICK_BLOCKS])
def test_quick_commands_run(page, block, page_dirs):
    work = page_dirs(page)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("NANO_TRACEBACK", None)
    p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["body"]], cwd=work, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (f"{page.name}:{block['line']} exited {p.returncode}\n--- stdout (tail)\n"
                               f"{p.stdout[-2000:]}\n--- stderr (tail)\n{p.stderr[-3000:]}")


def test_quick_blocks_exist():
    """The marker is found: each page that promises a quick check has one."""
    marked = {p.name for p, _ in QUICK_BLOCKS}
    assert {"training.md", "data.md", "annotation.md"} <= marked, marked


def paper_table() -> list[tuple[str, str]]:
    """(file, name) for every `file.py`: `name`, ... in the README's "Where each paper lives" table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Where each paper lives", 1)[1].split("\n## ", 1)[0]
    pairs = []
    for row in section.split("\n"):
        cells = row.split("|")
        if len(cells) < 4 or not cells[3].strip() or set(cells[3].strip()) <= {"-"}:
            continue
        for part in cells[3].split(";"):
            m = re.match(r"\s*`([\w/]+\.py)`:(.*)", part)
            if m:
                pairs += [(m.group(1), n) for n in re.findall(r"`(\w+)`", m.group(2))]
    return pairs


def test_paper_table_names_functions_that_exist():
    """A reader finds each paper's method at the file and name the README gives: each is a def (a method
    too), a class or a module-level assignment there (a moved or renamed function fails here)."""
    pairs = paper_table()
    assert len(pairs) > 30, pairs
    missing = [f"{f}: {n}" for f, n in pairs if not (ROOT / f).is_file() or not re.search(
        rf"^\s*(?:def|class) {n}\b|^{n}\s*(?::[^=\n]*)?=", (ROOT / f).read_text(encoding="utf-8"), re.M)]
    assert not missing, f"the README's paper table names what its file does not define: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_resolve():
    """Every relative link in the README, docs/ and tests/README.md points at a file that exists and, with
    a #anchor, at a heading of that file."""
    bad = []
    for page in [*PAGES, ROOT / "tests" / "README.md"]:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                bad.append(f"{page.name}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                heads = re.findall(r"^#+ (.+)$", FENCE.sub("", dest.read_text(encoding="utf-8")), re.M)
                if anchor not in {_slug(h) for h in heads}:
                    bad.append(f"{page.name}: {target} (no such heading)")
    assert not bad, bad
