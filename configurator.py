"""
Config files + command-line overrides, nanoGPT style, with the errors nanoGPT users ask for.

A script defines its defaults as plain module-level variables, then calls

    config = configure(globals(), sys.argv[1:])

which, in order:
  1. executes each positional argument (a Python config file) over the defaults,
  2. applies `--key=value` (or `--key value`) overrides, parsed with ast.literal_eval (fallback: str),
  3. checks every key and type, updates the script's globals in place and returns the resolved dict.

Errors (one clear message each, before any work): an unknown key lists close matches; a wrong type names
the key, the expected and the given type. A `None` default accepts any value; bools accept
True/False/true/false/1/0; an int is accepted where a float is expected. `-h`/`--help` prints every key
with its default and the comment beside it in the script.

A config file may also define a grid `sweep = dict(key=[values], ...)` (and `variants = dict(name=dict(...))`);
configure() ignores both, sweep.py reads them with read_config_file().
"""
import ast
import difflib
import io
import sys
import tokenize
from pathlib import Path

_SIMPLE = (int, float, bool, str, type(None), list, tuple, dict)
_SWEEP_NAMES = ("sweep", "variants")  # read by sweep.py, not config keys


class ConfigError(ValueError):
    pass


def config_keys(namespace: dict) -> dict:
    """The config-like names of a module namespace: public, plain-data values (ALL_CAPS constants excluded)."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and isinstance(v, _SIMPLE) and k not in _SWEEP_NAMES}


def configure(namespace: dict, argv: list[str], source: str | None = None, exit_on_error: bool = True) -> dict:
    """Resolve config files and overrides over `namespace` (a script's globals() or a dict of defaults).
    Updates `namespace` in place and returns the resolved config as a new dict."""
    source = source or namespace.get("__file__")
    defaults = config_keys(namespace)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text(defaults, source))
        sys.exit(0)
    try:
        config = parse_args(defaults, argv)
    except ConfigError as e:
        if not exit_on_error:
            raise
        sys.exit(f"config error: {e}")
    namespace.update(config)
    return config


def parse_args(defaults: dict, argv: list[str]) -> dict:
    """Apply config files and --key=value overrides to a copy of `defaults`; raise ConfigError on bad input."""
    config = dict(defaults)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            _apply_file(config, defaults, arg)
        elif "=" in arg:
            key, raw = arg[2:].split("=", 1)
            _set(config, defaults, key, raw, arg)
        else:  # --key value, or a bare --flag for a bool key
            key = arg[2:]
            _check_known(key, defaults, arg)
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if isinstance(defaults[key], bool) and (nxt is None or nxt.startswith("--") or nxt.endswith(".py")):
                config[key] = True
            elif nxt is None:
                raise ConfigError(f"{arg} needs a value: write --{key}=VALUE")
            else:
                _set(config, defaults, key, nxt, arg)
                i += 1
        i += 1
    return config


def read_config_file(path: str) -> dict:
    """Execute a config file in an empty namespace and return what it defines (incl. `sweep`/`variants`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} not found (positional arguments are config files; "
                          f"overrides are written --key=value)")
    namespace: dict = {}
    exec(compile(p.read_text(), str(p), "exec"), namespace)
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


def help_text(defaults: dict, source: str | None) -> str:
    comments = _trailing_comments(source) if source else {}
    width = max((len(k) for k in defaults), default=0)
    lines = [f"usage: python {Path(source).name if source else 'script.py'} [config.py ...] [--key=value ...]", ""]
    for k, v in defaults.items():
        c = comments.get(k, "")
        lines.append(f"  --{k:<{width}} = {v!r:<24}" + (f"  # {c}" if c else ""))
    return "\n".join(lines)


# -----------------------------------------------------------------------------

def _apply_file(config: dict, defaults: dict, path: str) -> None:
    namespace = dict(config)  # a config file may refer to other keys, as in nanoGPT
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} not found (positional arguments are config files; "
                          f"overrides are written --key=value)")
    exec(compile(p.read_text(), str(p), "exec"), namespace)
    for key, value in namespace.items():
        if key.startswith("_") or key in _SWEEP_NAMES or not isinstance(value, _SIMPLE):
            continue  # modules, functions and private helpers a config file may use
        if key in config and value is config[key]:
            continue
        _check_known(key, defaults, f"{path}: {key}")
        config[key] = _coerce(key, value, defaults[key], f"{path}: {key} = {value!r}")


def _set(config: dict, defaults: dict, key: str, raw: str, where: str) -> None:
    _check_known(key, defaults, where)
    config[key] = _coerce(key, _parse(raw, defaults[key]), defaults[key], where)


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
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _coerce(key: str, value, default, where: str):
    if default is None or value is None:
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


def _trailing_comments(source: str) -> dict:
    """`name = value  # comment` -> {name: comment} for the script's module-level assignments."""
    try:
        text = Path(source).read_text()
    except OSError:
        return {}
    comments = {t.start[0]: t.string.lstrip("#").strip()
                for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    return {node.targets[0].id: comments[node.end_lineno] for node in ast.parse(text).body
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            and node.end_lineno in comments}
