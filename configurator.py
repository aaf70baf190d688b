"""
Config files + command-line overrides, nanoGPT style, with the errors nanoGPT users ask for.

A script defines its defaults as plain module-level variables, then calls

    config = configure(globals(), sys.argv[1:])

which, in order:
  1. executes each positional argument (a Python config file) over the defaults,
  2. applies `--key=value` (or `--key value`) overrides, parsed with ast.literal_eval (fallback: str),
  3. checks every key and type, updates the script's globals in place and returns the resolved dict.

configure() returns a Config: the resolved dict plus `set_keys`, the keys a config file or the command line
set, whatever their value (a key set to its default value counts as set: "a key you set always wins").

Errors (one clear message each, before any work): an unknown key lists close matches; a wrong type names
the key, the expected and the given type; a value outside the key's declared range names the key and the range;
a config file that does not run names its file and line. A `None` default accepts any value; a key with another
default accepts None only where its comment says what None means (`top_k = 200  # ... (None = all)`); bools
accept True/False/true/false/1/0; an int is accepted where a float is expected. `-h`/`--help` prints every key
with its default and the comment beside it in the script.

Ranges are declared beside the defaults: a key's comment that starts with an interval, `[lo, hi]`, `(lo, hi)`
or half-open, with `inf` for no bound (`val_fraction=0.1,  # (0, 1) fraction held out`), is checked on every
number the key holds (also the items of a list and the values of a dict): a value outside it, or a non-finite
one, stops before any work. `-h` shows the interval with the comment.

Every CLI reports bad input the same way: errors it expects (InputError and its ConfigError, ValueError,
OSError) are printed by run_cli(program, main) as one line `<program>: <problem>: <fix>` with exit status 1,
never a traceback (set NANO_TRACEBACK=1 to see one). A traceback means a bug in our code.

A config file may also define a grid `sweep = dict(key=[values], ...)` (and `variants = dict(name=dict(...))`);
configure() ignores both, sweep.py reads them with read_config_file().
"""
import ast
import difflib
import errno
import glob
import io
import math
import os
import re
import shutil
import sys
import tokenize
import traceback
from pathlib import Path

_SIMPLE = (int, float, bool, str, type(None), list, tuple, dict)
_SWEEP_NAMES = ("sweep", "variants", "start_run", "replicate", "paired_baseline", "plot_evals")  # sweep.py reads these


class InputError(Exception):
    """Bad input a user can fix (a value, a missing or malformed file): the message is `<problem>: <fix>`."""


class ConfigError(InputError, ValueError):
    """A bad config key, value or config file."""


class Config(dict):
    """The resolved config (a plain dict) and `set_keys`: the keys a config file or the command line set."""
    set_keys: frozenset = frozenset()


EXPECTED_ERRORS = (InputError, ValueError, OSError)  # what a CLI reports in one line; anything else is a bug


def run_cli(program: str, main, *args):
    """Call main(*args); an expected error prints `<program>: <message>` to stderr and exits with status 1.
    KeyboardInterrupt exits 130 without a traceback. NANO_TRACEBACK=1 re-raises (for debugging)."""
    try:
        return main(*args)
    except EXPECTED_ERRORS as e:
        if os.environ.get("NANO_TRACEBACK"):
            raise
        sys.exit(f"{program}: {error_line(e)}")
    except KeyboardInterrupt:
        sys.exit(130)


def error_line(e: BaseException) -> str:
    """One line for an expected error: its own message, or for a bare OSError the file and the fix."""
    if isinstance(e, OSError) and _SHORT_WRITE.search(str(e)):
        return f"a write stopped short ({e}): the disk is full: free space or write elsewhere"
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, InputError):
        return f"{e.filename}: {e.strerror or e}: check the path (and that its disk is writable and not full)"
    return " ".join(str(e).split("\n")) or type(e).__name__


def check_output_path(key: str, path, inputs=()) -> None:
    """An output path a CLI is about to write, checked before any work: --key is not empty (an empty path is
    the current folder), not one of `inputs` (writing it would overwrite that input), and not inside an input
    folder or under a glob's folder (a rerun would read its own output). Raises ConfigError naming the key."""
    if not str(path).strip():
        raise ConfigError(f"--{key} is empty, which would write into the current folder: give a path")
    out = Path(path).resolve()
    for src in map(str, [inputs] if isinstance(inputs, (str, Path)) else inputs):
        if out == Path(src).resolve():
            raise ConfigError(f"--{key}={path} is also an input ({src}): writing it would overwrite the input; "
                              f"choose another --{key}")
        folder = Path(src).resolve() if Path(src).is_dir() else None
        if glob.has_magic(src):  # the folder the pattern searches: its part before the first wildcard
            base = re.split(r"[*?\[]", src, maxsplit=1)[0]
            folder = Path(base or ".").resolve() if not base or base.endswith("/") else Path(base).resolve().parent
        if folder is not None and out.is_relative_to(folder):
            raise ConfigError(f"--{key}={path} is inside the input folder {folder} (of {src}): a rerun would read "
                              f"its own output as input; choose a --{key} outside it")


_SHORT_WRITE = re.compile(r"^\d+ requested and \d+ written$")  # numpy's tofile/np.save when the disk is full
_LEFTOVERS = ("*.tmp", ".*.building.*", ".*.old.*")  # temporary files and folders a killed write leaves


def is_disk_full(e: BaseException) -> bool:
    """Whether a failed write ran out of space: errno ENOSPC/EDQUOT, numpy's "N requested and M written"
    (tofile and np.save drop the errno), or torch.save's "file write failed" (a RuntimeError)."""
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or bool(
        _SHORT_WRITE.search(str(e))) or any(m in str(e) for m in (
            "file write failed", "unexpected pos", "No space left on device", "StorageFull"))  # torch, safetensors


def write_error(e: BaseException, where: str | Path, what: str) -> InputError:
    """A failed write of `what` into folder `where` as one message naming the cause: for a full disk the free
    space and the largest leftover temporary files (*.tmp, .NAME.building.*, .NAME.old.*) in `where` and its
    parent, which a killed run left and which may be what fills it; otherwise the OS's reason."""
    where = Path(where)
    if not is_disk_full(e):
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0] if str(e) else ""
        return InputError(f"cannot write {what} in {where}: {reason or type(e).__name__}: check that the folder "
                          f"is writable")
    existing = next((p for p in (where, *where.absolute().parents) if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    left = sorted(((_size(p), p) for d in {existing, existing.parent} for pattern in _LEFTOVERS
                   for p in d.glob(pattern)), reverse=True)
    named = "; ".join(f"{p} ({n / 1e6:,.1f} MB)" for n, p in left[:3] if n)
    return InputError(f"cannot write {what} in {where}: the disk is full ({free / 1e6:,.1f} MB free): free space "
                      f"or write elsewhere" + (f"; leftovers of killed runs that take space: {named} "
                                               f"(remove them if no run is writing them)" if named else ""))


def _size(path: Path) -> int:
    """Bytes of a file, or of the files under a folder."""
    try:
        return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*")
                                                                if f.is_file())
    except OSError:
        return 0


def config_keys(namespace: dict) -> dict:
    """The config-like names of a module namespace: public, plain-data values (ALL_CAPS constants excluded)."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and isinstance(v, _SIMPLE) and k not in _SWEEP_NAMES}


def configure(namespace: dict, argv: list[str], source: str | None = None, exit_on_error: bool = True) -> Config:
    """Resolve config files and overrides over `namespace` (a script's globals() or a dict of defaults).
    Updates `namespace` in place and returns the resolved config as a new Config (a dict with set_keys).
    A bad input exits with `<script>: <message>` (or raises ConfigError with exit_on_error=False)."""
    source = source or namespace.get("__file__")
    defaults = config_keys(namespace)
    if any(a in ("-h", "--help") for a in argv):
        print_and_exit(help_text(defaults, source))
    try:
        config = parse_args(defaults, argv, source)
    except ConfigError as e:
        if not exit_on_error:
            raise
        sys.exit(f"{Path(source).name if source else 'config'}: {e}")
    namespace.update(config)
    return config


def parse_args(defaults: dict, argv: list[str], source: str | None = None) -> Config:
    """Apply config files and --key=value overrides to a copy of `defaults`; raise ConfigError on bad input.
    source: the script whose comments declare the keys' ranges and which keys accept None (see the module
    docstring); without it no range is checked. The result's set_keys are the keys the files and overrides set."""
    comments = _trailing_comments(source, set(defaults)) if source else {}
    nullable = {k for k, c in comments.items() if "None" in c}
    config, set_keys = Config(defaults), set()
    for key, raw, where in _arguments(defaults, argv):
        if key is None:
            set_keys |= _apply_file(config, defaults, raw, nullable)
            continue
        if raw is None:  # a bare --flag of a bool key
            _check_known(key, defaults, where)
            config[key] = True
        else:
            _set(config, defaults, key, raw, where, nullable)
        set_keys.add(key)
    check_ranges(config, declared_ranges(comments))
    config.set_keys = frozenset(set_keys)
    return config


_INTERVAL = re.compile(r"\s*([\[(])\s*(-?inf|[-+0-9.e]+)\s*,\s*(-?inf|[-+0-9.e]+)\s*([\])])")


def declared_ranges(comments: dict) -> dict:
    """{key: (lo, hi, lo_open, hi_open, text)} of the keys whose comment starts with an interval."""
    out = {}
    for key, comment in comments.items():
        m = _INTERVAL.match(comment)
        if m:
            try:
                lo, hi = float(m.group(2)), float(m.group(3))
            except ValueError:
                continue  # not numbers: an ordinary comment that starts with a bracket
            out[key] = (lo, hi, m.group(1) == "(", m.group(4) == ")", m.group(0).strip())
    return out


def check_ranges(config: dict, ranges: dict) -> None:
    """Raise ConfigError naming the key and its range for the first number outside the key's range (see
    declared_ranges); None and non-numbers are left to the type check."""
    for key, (lo, hi, lo_open, hi_open, text) in ranges.items():
        for x in _numbers(config.get(key)):
            below = x <= lo if lo_open else x < lo
            above = x >= hi if hi_open else x > hi
            if below or above or not math.isfinite(x):
                held = "is" if x is config[key] else f"holds {x!r},"
                raise ConfigError(f"{key}={config[key]!r} {held} outside its range {text}: set --{key} to a "
                                  f"value in {text}")


def _numbers(value):
    """The ints and floats in a value: itself, or the items of a list/tuple and the values of a dict."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)


def split_args(defaults: dict, argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """A command line as parse_args reads it, not applied: (config files, [(key, value text), ...]) in order;
    a bare --flag of a bool key gives 'True'. For a script that passes some keys on to another (sweep.py)."""
    files, overrides = [], []
    for key, raw, _ in _arguments(defaults, argv):
        if key is None:
            files.append(raw)
        else:
            overrides.append((key, "True" if raw is None else raw))
    return files, overrides


def _arguments(defaults: dict, argv: list[str]):
    """(None, config file, arg) or (key, value text or None for a bare bool --flag, arg) per argument."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            yield None, arg, arg
        elif "=" in arg:
            key, raw = arg[2:].split("=", 1)
            yield key, raw, arg
        else:  # --key value, or a bare --flag for a bool key
            key = arg[2:]
            _check_known(key, defaults, arg)
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if isinstance(defaults[key], bool) and (nxt is None or nxt.startswith("--") or nxt.endswith(".py")):
                yield key, None, arg
            elif nxt is None:
                raise ConfigError(f"{arg} needs a value: write --{key}=VALUE")
            else:
                yield key, nxt, arg
                i += 1
        i += 1


def read_config_file(path: str) -> dict:
    """Execute a config file in an empty namespace and return what it defines (incl. `sweep`/`variants`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} not found (positional arguments are config files; "
                          f"overrides are written --key=value)")
    namespace: dict = {}
    _exec_file(p, namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def read_sweep(path: str) -> dict | None:
    """The `sweep = dict(key=[values])` grid a config file defines, or None."""
    return read_config_file(path).get("sweep")


def script_defaults(path: str) -> dict:
    """A script's config defaults, read from its source with ast (nothing is executed): every module-level
    `name = value` before the configure() call; values computed at run time are given as None."""
    tree = ast.parse(Path(path).read_text())
    out = {}
    for node in tree.body:
        if _calls_configure(node):
            break
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                value = None  # computed at run time (e.g. from other keys): a key of unknown type
            if not name.startswith("_") and not name.isupper() and isinstance(value, _SIMPLE):
                out[name] = value
    return out


def configure_command(commands: dict, argv: list[str], source: str) -> tuple[str, Config]:
    """The sub-command form of configure(): `python X.py COMMAND [config.py ...] [--key=value ...]`.
    commands maps each command name to its defaults dict (comments beside the dict's keywords are its -h text).
    Returns (command, config). No command, `-h` or an unknown command prints the usage line and exits (status 0
    for -h; otherwise to stderr, status 1); `X.py COMMAND -h` lists that command's keys, defaults and comments."""
    name = Path(source).name
    usage = f"usage: python {name} {{{'|'.join(commands)}}} [config.py ...] [--key=value ...]  (COMMAND -h lists keys)"
    if argv and argv[0] in ("-h", "--help"):
        print_and_exit(usage)
    if not argv:
        sys.exit(f"{name}: give a command\n{usage}")
    if argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], list(commands), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        sys.exit(f"{name}: unknown command {argv[0]!r}{hint}\n{usage}")
    if any(a in ("-h", "--help") for a in argv[1:]):
        print_and_exit(help_text(dict(commands[argv[0]]), source, command=argv[0]))
    return argv[0], configure(dict(commands[argv[0]]), argv[1:], source=source)


def print_and_exit(text: str) -> None:
    """Print `text` (the -h output) and exit 0, also when the reader closed the pipe early (`X.py -h | head`):
    then the rest is not wanted, so no BrokenPipeError traceback (Python docs, signal module, "Note on SIGPIPE")."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail again
    sys.exit(0)


def help_text(defaults: dict, source: str | None, command: str = "") -> str:
    comments = _trailing_comments(source, set(defaults)) if source else {}
    width = max((len(k) for k in defaults), default=0)
    head = f"python {Path(source).name if source else 'script.py'}" + (f" {command}" if command else "")
    lines = [f"usage: {head} [config.py ...] [--key=value ...]", ""]
    for k, v in defaults.items():
        c = comments.get(k, "")
        lines.append(f"  --{k:<{width}} = {v!r:<24}" + (f"  # {c}" if c else ""))
    return "\n".join(lines)


# -----------------------------------------------------------------------------

def _exec_file(p: Path, namespace: dict) -> set[str]:
    """Run a config file in namespace; return the names it assigns at its top level. A syntax error or an
    exception names the file and line."""
    try:
        text = p.read_text(encoding="utf-8")
        tree = ast.parse(text, str(p))
    except SyntaxError as e:
        raise ConfigError(f"{p}:{e.lineno}: syntax error ({e.msg}): fix the config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read the config file ({e}): check the path") from None
    try:
        exec(compile(tree, str(p), "exec"), namespace)
    except Exception as e:
        line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == str(p)),
                    "?")
        raise ConfigError(f"{p}:{line}: {type(e).__name__}: {e}: fix the config file") from None
    return _assigned_names(tree)


def _assigned_names(tree: ast.Module) -> set[str]:
    """Names bound at a module's top level (also inside its if/for/with/try blocks), not in functions."""
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
                             ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _apply_file(config: dict, defaults: dict, path: str, nullable: set = frozenset()) -> set[str]:
    """Apply a config file to config; return the keys it set (assigned in it, or changed by it)."""
    namespace = dict(config)  # a config file may refer to other keys, as in nanoGPT
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} not found (positional arguments are config files; "
                          f"overrides are written --key=value)")
    assigned = _exec_file(p, namespace)
    set_keys = set()
    for key, value in namespace.items():
        if key.startswith("_") or key in _SWEEP_NAMES or not isinstance(value, _SIMPLE):
            continue  # modules, functions and private helpers a config file may use
        if key in config and value is config[key] and key not in assigned:
            continue
        _check_known(key, defaults, f"{path}: {key}")
        config[key] = _coerce(key, value, defaults[key], f"{path}: {key} = {value!r}", key in nullable)
        set_keys.add(key)
    return set_keys


def _set(config: dict, defaults: dict, key: str, raw: str, where: str, nullable: set = frozenset()) -> None:
    _check_known(key, defaults, where)
    config[key] = _coerce(key, _parse(raw, defaults[key]), defaults[key], where, key in nullable)


def _parse(raw: str, default):
    if isinstance(default, str):
        return raw  # a str key keeps the text as written (`--dataset=1e5` stays '1e5')
    if isinstance(default, bool):
        low = raw.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        return [_literal(v) for v in raw.split(",") if v]  # `--input=a.txt,b.txt` (or one item) for a list key
    return value


def _literal(raw: str):
    """A list item as written: a Python literal where it parses (`800` -> 800), else the text."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _coerce(key: str, value, default, where: str, nullable: bool = False):
    if default is None or (value is None and nullable):
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
    elif isinstance(default, float) and isinstance(value, int):
        return float(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    elif isinstance(value, type(default)):
        return value
    raise ConfigError(f"{where}: key {key!r} expects {type(default).__name__} (default {default!r}), "
                      f"got {type(value).__name__} {value!r}")


def _check_known(key: str, defaults: dict, where: str) -> None:
    if key in defaults:
        return
    close = difflib.get_close_matches(key, list(defaults), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run with -h to list the keys"
    raise ConfigError(f"unknown config key {key!r} (in {where}){hint}")


def _calls_configure(node: ast.stmt) -> bool:
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == "configure"
               for n in ast.walk(node))


def _trailing_comments(source: str, keys: set = frozenset()) -> dict:
    """`name = value  # comment` -> {name: comment} for the script's module-level assignments. A `dict(...)`
    whose keywords are exactly `keys` (one command's defaults) gives its own comments first."""
    try:
        text = Path(source).read_text()
    except OSError:
        return {}
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    out = {}
    for node in ast.parse(text).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        if node.end_lineno in comments:
            out[node.targets[0].id] = comments[node.end_lineno]
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "dict":  # X_DEFAULTS = dict(
            own = {kw.arg: comments[kw.value.end_lineno] for kw in node.value.keywords  # key=value,  # comment
                   if kw.arg and kw.value.end_lineno in comments}  # (a sub-command's keys)
            if keys and {kw.arg for kw in node.value.keywords} == keys:
                return out | own  # two commands may share a key name (input) with different meanings
            out = own | out
    return out
