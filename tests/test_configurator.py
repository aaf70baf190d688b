import ast
import math
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from configurator import ConfigError, configure, parse_args, read_sweep, script_defaults

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = dict(out_dir="out", batch_size=12, learning_rate=6e-4, compile=True, dropout=0.0,
                betas=(0.9, 0.95), device=None, n_layer=12)


def test_overrides_types_and_forms():
    c = parse_args(DEFAULTS, ["--batch_size=4", "--learning_rate", "1e-3", "--compile=false", "--dropout=1",
                              "--out_dir=1e5", "--device=cuda:1", "--betas=[0.8, 0.9]"])
    assert c["batch_size"] == 4 and c["learning_rate"] == 1e-3 and c["compile"] is False
    assert c["dropout"] == 1.0 and isinstance(c["dropout"], float)  # int accepted for a float key
    assert c["out_dir"] == "1e5"  # a str key keeps the text as written
    assert c["device"] == "cuda:1"  # None default accepts anything
    assert c["betas"] == (0.8, 0.9) and isinstance(c["betas"], tuple)
    assert DEFAULTS["batch_size"] == 12  # defaults untouched


@pytest.mark.parametrize("raw,expected", [("True", True), ("true", True), ("1", True),
                                          ("False", False), ("false", False), ("0", False)])
def test_bool_spellings(raw, expected):
    assert parse_args(DEFAULTS, [f"--compile={raw}"])["compile"] is expected


def test_bare_bool_flag():
    assert parse_args(dict(DEFAULTS, compile=False), ["--compile"])["compile"] is True


def test_unknown_key_lists_close_matches():
    with pytest.raises(ConfigError, match="learning_rate"):
        parse_args(DEFAULTS, ["--learning_rat=0.1"])


def test_type_mismatch_names_key_and_types():
    with pytest.raises(ConfigError, match=r"batch_size.*int.*float"):
        parse_args(DEFAULTS, ["--batch_size=0.5"])
    with pytest.raises(ConfigError, match=r"compile.*bool"):
        parse_args(DEFAULTS, ["--compile=maybe"])
    with pytest.raises(ConfigError, match=r"n_layer.*int.*bool"):
        parse_args(DEFAULTS, ["--n_layer=True"])


def test_config_file_then_overrides(tmp_path):
    f = tmp_path / "c.py"
    f.write_text(textwrap.dedent("""
        import math
        batch_size = 32
        n_layer = 2 * 3
        learning_rate = 1e-3 * math.sqrt(4)
        sweep = dict(learning_rate=[1e-3, 1e-2])
        _helper = 5
    """))
    c = parse_args(DEFAULTS, [str(f), "--batch_size=8"])
    assert c["batch_size"] == 8 and c["n_layer"] == 6 and c["learning_rate"] == pytest.approx(2e-3)
    assert "sweep" not in c and "math" not in c
    assert read_sweep(str(f)) == dict(learning_rate=[1e-3, 1e-2])


def test_config_file_errors(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("batch_sise = 3\n")
    with pytest.raises(ConfigError, match="batch_size"):
        parse_args(DEFAULTS, [str(f)])
    with pytest.raises(ConfigError, match="not found"):
        parse_args(DEFAULTS, [str(tmp_path / "missing.py")])


def test_configure_updates_namespace_and_exits_cleanly():
    ns = dict(DEFAULTS, __file__=None, sys=sys)
    out = configure(ns, ["--n_layer=3"])
    assert ns["n_layer"] == 3 and out["n_layer"] == 3 and "sys" not in out
    with pytest.raises(SystemExit, match="unknown config key"):
        configure(dict(DEFAULTS), ["--nope=1"])


def test_help_and_script_defaults(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""
        import sys
        from configurator import configure
        batch_size = 12  # sequences per micro-step
        tag = '#not-a-comment'  # the run's tag
        derived = batch_size * 2
        config = configure(globals(), sys.argv[1:])
        after = 1
    """))
    assert script_defaults(str(script)) == dict(batch_size=12, tag="#not-a-comment", derived=None)
    env = {"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, str(script), "-h"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    assert "batch_size" in r.stdout and "sequences per micro-step" in r.stdout and "the run's tag" in r.stdout
    r = subprocess.run([sys.executable, str(script), "--batch_size=x"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "batch_size" in r.stderr and "Traceback" not in r.stderr


def test_set_keys_are_the_keys_you_set_whatever_their_value(tmp_path):
    f = tmp_path / "c.py"
    f.write_text("compile = True\nif True:\n    n_layer = 12\nbatch_size = batch_size\n_private = 1\n")
    c = parse_args(DEFAULTS, [str(f), "--dropout=0.0", "--device", "cpu"])
    # compile, n_layer and batch_size keep their default values (True is True, 12 is 12) but were set
    assert c.set_keys == {"compile", "n_layer", "batch_size", "dropout", "device"}
    assert parse_args(DEFAULTS, []).set_keys == frozenset()
    ns = dict(DEFAULTS)
    assert configure(ns, ["--n_layer=12"]).set_keys == {"n_layer"}


def test_config_file_errors_name_file_and_line(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("batch_size = 4\nlearning_rate = = 3\n")
    with pytest.raises(ConfigError, match=r"bad.py:2: syntax error"):
        parse_args(DEFAULTS, [str(f)])
    f.write_text("batch_size = 4\n\nn_layer = undefined + 1\n")
    with pytest.raises(ConfigError, match=r"bad.py:3: NameError: .*undefined.*fix the config file"):
        parse_args(DEFAULTS, [str(f)])


def test_run_cli_prints_one_line_for_expected_errors_only(capsys):
    from configurator import InputError, run_cli

    def bad_value():
        raise InputError("batch_size=0 must be >= 1: fix --batch_size")

    def missing_file():
        open("/nonexistent/file.txt")

    def bug():
        raise KeyError("a bug")

    with pytest.raises(SystemExit, match=r"^prog.py: batch_size=0 must be >= 1: fix --batch_size$"):
        run_cli("prog.py", bad_value)
    with pytest.raises(SystemExit, match=r"^prog.py: /nonexistent/file.txt: No such file or directory: check"):
        run_cli("prog.py", missing_file)
    with pytest.raises(KeyError):  # not an input error: a bug keeps its traceback
        run_cli("prog.py", bug)


def test_data_prepare_passes_every_recipe_key_you_set(monkeypatch):
    """`data.py prepare --vocab_size=4096` (the default value) must reach prepare_dataset, so a folder built
    with another size is rebuilt; a key you did not set keeps the folder's value."""
    import data
    calls = []
    monkeypatch.setattr(data, "prepare_dataset", lambda **kw: calls.append(kw) or None)
    monkeypatch.setattr(data, "load_meta", lambda folder: {})
    data.main(["prepare", "--dataset=x", "--vocab_size=4096", "--dedup=True"])
    data.main(["prepare", "--dataset=x"])
    assert calls[0]["vocab_size"] == 4096 and calls[0]["dedup"] is True
    assert "vocab_size" not in calls[1] and "dedup" not in calls[1]


def test_a_list_key_takes_comma_separated_items_or_a_literal():
    d = {"input": [], "sizes": [1]}
    assert parse_args(d, ["--input=a.txt,b.txt"])["input"] == ["a.txt", "b.txt"]
    assert parse_args(d, ["--input=a.txt"])["input"] == ["a.txt"]
    assert parse_args(d, ["--input", "['x y.txt']"])["input"] == ["x y.txt"]
    assert parse_args(d, ["--sizes=1000,2000"])["sizes"] == [1000, 2000]
    assert parse_args(d, ["--sizes=800"])["sizes"] == [800]


def test_sub_commands_list_their_keys_with_comments(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(textwrap.dedent('''
        import sys
        from configurator import configure_command
        FIT_DEFAULTS = dict(
            lr=0.1,  # the step size
            files=[],  # inputs
        )
        SHOW_DEFAULTS = dict(n=3)
        command, cfg = configure_command({"fit": FIT_DEFAULTS, "show": SHOW_DEFAULTS}, sys.argv[1:], __file__)
        print(command, dict(cfg))
    '''))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def run(*args):
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
    ok = run("fit", "--lr=0.5", "--files=a,b")
    assert ok.returncode == 0 and "fit {'lr': 0.5, 'files': ['a', 'b']}" in ok.stdout
    h = run("fit", "-h")
    assert h.returncode == 0 and "--lr" in h.stdout and "# the step size" in h.stdout
    assert "python tool.py fit" in h.stdout
    assert run().returncode == 1 and "{fit|show}" in run().stderr
    bad = run("fitt")
    assert bad.returncode == 1 and "did you mean fit" in bad.stderr and "Traceback" not in bad.stderr
    assert "unknown config key 'lrr'" in run("fit", "--lrr=1").stderr


# --- ranges: every numeric key of every CLI declares its valid interval beside its default --------------------

CLIS = ["train.py", "sample.py", "sweep.py", "data.py prepare", "clean.py", "tokenizer.py train",
        "tokeval.py evaluate", "tokeval.py analyze", "ner.py train", "ner.py evaluate", "ner.py predict",
        "annotate.py convert", "agreement.py agreement", "agreement.py merge", "agreement.py resolve",
        "checkpoint.py convert", "norms.py"]
_HELP_LINE = re.compile(r"^  --(\w+)\s+= (.*?)(?:  # (.*))?$")


def _help_keys(cli: str) -> dict:
    """{key: (default, comment)} as `python CLI -h` lists them."""
    r = subprocess.run([sys.executable, *cli.split(), "-h"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    keys = {}
    for line in r.stdout.splitlines():
        m = _HELP_LINE.match(line)
        if m:
            try:
                default = ast.literal_eval(m.group(2).strip())
            except (ValueError, SyntaxError):
                default = m.group(2).strip()
            keys[m.group(1)] = (default, m.group(3) or "")
    assert keys or cli.startswith(("annotate", "checkpoint", "norms")), cli
    return keys


def _numeric(v) -> bool:
    items = v.values() if isinstance(v, dict) else v
    return not isinstance(v, bool) and (isinstance(v, (int, float)) or (
        isinstance(v, (list, tuple, dict)) and bool(v) and all(map(_numeric, items))))


def _as_value(default, x) -> str:
    """x written as the key's value: a dict key gets x as its first value, a list key [x]."""
    if isinstance(default, dict):
        return repr({**default, next(iter(default)): x})
    if isinstance(default, (list, tuple)):
        return repr([x])
    return "1e999" if x == math.inf else "-1e999" if x == -math.inf else repr(x)


def _cases(lo, hi, lo_open, hi_open, is_int):
    """(values outside the range, values inside it at its bounds)."""
    step = 1 if is_int else 0.5
    bad, good = [], []
    for bound, is_open, sign in ((lo, lo_open, -1), (hi, hi_open, 1)):
        if math.isinf(bound):
            if not is_int:
                bad.append(bound)  # inf and -inf are never in range
            continue
        bad.append(bound if is_open else bound + sign * step)
        good.append(bound - sign * 1e-6 if is_open else (int(bound) if is_int else bound))
    return [int(x) if is_int and math.isfinite(x) else x for x in bad], good


@pytest.mark.slow
def test_every_numeric_key_of_every_cli_has_a_range_that_is_checked():
    """Over each CLI's -h keys: a numeric key without a declared range fails; every value outside a declared
    range stops configure() with one line `<script>: <key>=... outside its range ...` (exit status 1, the
    CLI's first step), and the in-range values at the bounds are accepted."""
    from concurrent.futures import ThreadPoolExecutor

    from configurator import declared_ranges
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(CLIS, pool.map(_help_keys, CLIS)))
    unranged, checked = [], 0
    for cli, keys in helps.items():
        script, *command = cli.split()
        ranges = declared_ranges({k: c for k, (_, c) in keys.items()})
        unranged += [f"{cli} --{k}" for k, (v, _) in keys.items() if _numeric(v) and k not in ranges]
        defaults = {k: v for k, (v, _) in keys.items()}
        for key, (lo, hi, lo_open, hi_open, text) in ranges.items():
            default = defaults[key]
            items = list(default.values()) if isinstance(default, dict) else list(default) \
                if isinstance(default, (list, tuple)) else [default]
            is_int = all(isinstance(x, int) for x in items) and float(lo).is_integer()
            bad, good = _cases(lo, hi, lo_open, hi_open, is_int)
            assert bad, f"{cli} --{key}: no value outside {text} to test"
            for x in bad:
                arg = f"--{key}={_as_value(default, x)}"
                with pytest.raises(SystemExit) as e:
                    configure(dict(defaults), [arg], source=str(ROOT / script))
                msg = e.value.code
                assert isinstance(msg, str) and "\n" not in msg and msg.startswith(f"{script}: {key}=") \
                    and f"outside its range {text}" in msg, (cli, arg, msg)
                checked += 1
            for x in good:
                value = ast.literal_eval(_as_value(default, x))
                assert configure(dict(defaults), [f"--{key}={value!r}"], source=str(ROOT / script))[key] == value
    assert not unranged, f"numeric keys without a declared range (write it first in the comment): {unranged}"
    assert checked > 100


def test_a_range_is_read_from_the_comment_and_none_only_where_the_comment_allows_it(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("frac = 0.5  # (0, 1] a share\nsizes = [8]  # [1, inf) sizes\nk = 200  # top k (None = all)\n"
                      "name = 'a'  # a name\nbox = 3  # (a comment that starts with a bracket, 1, 2)\n")
    defaults = script_defaults(str(script))
    c = parse_args(defaults, ["--frac=1", "--sizes=4,5", "--k=None", "--box=-7"], str(script))
    assert (c["frac"], c["sizes"], c["k"], c["box"]) == (1.0, [4, 5], None, -7)
    for arg, what in (("--frac=0", "frac=0.0 is outside its range (0, 1]"), ("--frac=1e999", "frac=inf"),
                      ("--sizes=4,0", "sizes=[4, 0] holds 0, outside its range [1, inf)"),
                      ("--frac=None", "'frac' expects float")):
        with pytest.raises(ConfigError, match=re.escape(what)):
            parse_args(defaults, [arg], str(script))
    for text, what in (("frac = -1\n", "frac=-1.0 is outside its range (0, 1]"),
                       ("name = None\n", "name = None: key 'name' expects str")):  # `dataset = None` in a config
        (tmp_path / "c.py").write_text(text)
        with pytest.raises(ConfigError, match=re.escape(what)):
            parse_args(defaults, [str(tmp_path / "c.py")], str(script))
def _closed_pipe_run(args: list[str]) -> tuple[int, str]:
    """Run `python ARGS` with its stdout a pipe that is closed before anything is read (what `| head` does once it
    has its lines): (exit status, stderr)."""
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    p.stdout.close()
    err = p.stderr.read()
    return p.wait(timeout=300), err


def test_help_into_a_closed_pipe_ends_quietly():
    """`X.py -h | head -1`: the help text meets a closed pipe; print_and_exit exits 0 without a BrokenPipeError
    traceback (a plain print raises one)."""
    code = "import configurator; configurator.print_and_exit('key = value  # comment\\n' * 20000)"
    status, err = _closed_pipe_run(["-c", code])
    assert status == 0 and err == ""
    status, err = _closed_pipe_run(["-c", "print('key = value  # comment\\n' * 20000)"])
    assert "BrokenPipeError" in err  # the failure the helper exists for


def _clis() -> list[str]:
    """Every script with a command line (each parses it with configurator: configure, configure_command, or
    print_and_exit for sweep.py's own -h)."""
    files = [*ROOT.glob("*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("config/*.py")]
    return sorted(p.relative_to(ROOT).as_posix() for p in files if p.name != "configurator.py"
                  and re.search(r"\b(configure|configure_command|print_and_exit)\(", p.read_text(encoding="utf-8")))


@pytest.mark.slow  # every CLI imports torch
def test_every_cli_help_into_a_closed_pipe_ends_quietly():
    """`python X.py -h | head -1` for every CLI, and `data.py prepare -h` for the COMMAND -h branch that
    configure_command shares with the other command CLIs: exit 0, no traceback."""
    clis = _clis()
    assert {"train.py", "data.py", "sweep.py", "tokenizer.py", "ner.py", "bench/bench_train.py"} <= set(clis)
    runs = [[s, "-h"] for s in clis] + [["data.py", "prepare", "-h"]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(map(" ".join, runs), pool.map(_closed_pipe_run, runs)))
    bad = {run: r for run, r in results.items() if r[0] != 0 or "Traceback" in r[1] or "Error" in r[1]}
    assert not bad, bad
