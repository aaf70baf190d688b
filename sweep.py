"""
Sweeps: a config file declares a grid, one command runs it (the ablation workflow of Modalities,
arXiv:2602.08387, in a short file).

    python sweep.py config/oec_lr_sweep.py                   # run the grid, one run after another
    python sweep.py config/oec_lr_sweep.py --dry_run         # print one torchrun line per unfinished run
    python sweep.py config/oec_lr_sweep.py --max_iters=100   # a train.py override for every run
    python sweep.py config/oec_lr_sweep.py --results_only    # rewrite results.csv, plots and summary

A sweep config is an ordinary train.py config file plus a grid, and optionally named variants:

    sweep = dict(learning_rate=[1e-3, 1e-2, 1e-1], variant=['baseline', 'z_loss'])
    variants = dict(baseline={}, z_loss=dict(z_loss=1e-4), mu_centering=dict(mu_centering=True))

Every key of `sweep` is a train.py config key, except `variant`, which picks one entry of `variants` (a
dict of train.py keys set together). With `variants` and no `variant` in `sweep`, every variant is run.
Runs are the cartesian product, named by their swept values in grid order (`learning_rate=0.01,
variant=z_loss`), each a train.py run folder under the sweep folder (--sweep_dir, default
sweeps/<config name>). The grid is recorded in sweep.json; a folder holding another grid is refused.
A run whose summary.json says finished or diverged is skipped, so an interrupted sweep resumes (a run
with a checkpoint but no summary continues with --init_from=resume). A diverged run (NaN) is a row with
diverged=True, not a crash of the sweep.

sweep.py's own keys (SWEEP_DEFAULTS, `python sweep.py -h`): --dry_run, --results_only, --sweep_dir=DIR,
--nproc_per_node=N (for the torchrun lines, default 8); every other --key=value is a train.py key.

Outputs in the sweep folder: results.csv (one row per run), loss_vs_<key>.png and curves.png (with
matplotlib; skipped with a message without it), and a printed summary with the learning-rate
sensitivity per variant (Wortsman et al. 2023, arXiv:2309.14322, as the OEC code computes it) and, when
norms differ, the DyISRU paper's metrics L1/L2/L12/I1/I2/S1/S2.
"""
import ast
import csv
import difflib
import itertools
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

from configurator import (ConfigError, help_text, parse_args, print_and_exit, read_config_file, script_defaults,
                          split_args)

TRAIN = Path(__file__).resolve().parent / "train.py"
# sweep.py's own keys; every other --key=value is a train.py key, passed to every run
SWEEP_DEFAULTS = dict(
    dry_run=False,  # print one torchrun line per unfinished run instead of running them
    results_only=False,  # run nothing: rewrite results.csv, the plots and the summary from the run folders
    sweep_dir="",  # the sweep folder ('' = sweeps/<config file name>)
    nproc_per_node=8,  # GPUs per node in the --dry_run torchrun lines
)
_SUMMARY_COLUMNS = ["final_train_loss", "final_val_loss", "best_val_loss", "diverged", "tokens",
                    "wall_time_s", "step"]
_DONE = ("finished", "diverged")  # run states that are not run again


def _fail(msg: str) -> None:
    raise SystemExit(f"sweep.py: {msg}")


# ----------------------------------------------------------------------------- the grid

def format_value(v) -> str:
    """A swept value as written in run names and on the command line (`0.001`, `1e-05`, `z_loss`)."""
    return v if isinstance(v, str) else repr(v).replace(" ", "")


def run_name(values: dict) -> str:
    """Deterministic folder name of one run: `key=value,...` in grid order ('/' and spaces become '_')."""
    return ",".join(f"{k}={format_value(v)}" for k, v in values.items()).replace("/", "_").replace(" ", "_")


def expand(grid: dict, variants: dict | None = None) -> list[dict]:
    """The cartesian product of the grid: [{"name", "values": swept values, "settings": train.py keys}],
    in grid order (the last key varies fastest). `variant` values are expanded to their keys."""
    runs = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        settings = {k: v for k, v in values.items() if k != "variant"}
        if "variant" in values:
            settings = {**variants[values["variant"]], **settings}
        runs.append({"name": run_name(values), "values": values, "settings": settings})
    names = [r["name"] for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _fail(f"two runs get the same name {dup[0]!r}: make the swept values distinct (e.g. 1 and 1.0)")
    return runs


def _train_defaults() -> dict:
    """train.py's config keys: literal defaults (typed) and computed ones such as device and dtype (None,
    which accepts any value): the module-level names assigned before its configure() call."""
    computed = {}
    for node in ast.parse(TRAIN.read_text()).body:
        calls = [getattr(n.func, "id", None) for n in ast.walk(node) if isinstance(n, ast.Call)]
        if "configure" in calls:
            break
        if isinstance(node, ast.Assign):
            computed.update({t.id: None for t in node.targets if isinstance(t, ast.Name) and t.id[0] != "_"})
    return {**computed, **script_defaults(str(TRAIN))}


def load_sweep(config: str, overrides: list[str]) -> tuple[dict, dict, list[dict]]:
    """Read and check the grid of a config file; returns (grid, variants, runs). Every problem is an error
    here, before any run starts: unknown keys, empty lists, unknown variants, a key set twice."""
    try:
        ns = read_config_file(config)
    except ConfigError as e:
        _fail(str(e))
    grid, variants = ns.get("sweep"), ns.get("variants")
    if grid is None and variants is None:
        _fail(f"{config} defines no `sweep = dict(key=[values], ...)` (nor `variants`): nothing to sweep")
    grid = dict(grid or {})
    if variants is not None:
        if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
            _fail(f"{config}: variants must be a dict of dicts, e.g. variants = dict(baseline={{}}, "
                  f"z_loss=dict(z_loss=1e-4))")
        grid.setdefault("variant", list(variants))
    defaults = _train_defaults()
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            _fail(f"{config}: sweep key {key!r} needs a non-empty list of values, got {values!r}")
        if key == "variant":
            if variants is None:
                _fail(f"{config}: sweep has 'variant' but the file defines no "
                      f"`variants = dict(name=dict(...))`")
            unknown = [v for v in values if v not in variants]
            if unknown:
                _fail(f"{config}: sweep variant(s) {unknown} are not in variants ({list(variants)})")
        elif key not in defaults:
            _fail(f"{config}: sweep key {key!r} is not a train.py config key" + _close(key, defaults))
    set_by = {}
    for source, keys in [("the command line", [a[2:].split("=", 1)[0] for a in overrides]),
                         ("sweep", [k for k in grid if k != "variant"]),
                         ("variants", sorted({k for v in (variants or {}).values() for k in v}))]:
        for key in keys:
            if key == "out_dir":
                _fail(f"out_dir is set by sweep.py for every run (the run folder): do not set it in {source}")
            if key in set_by and set_by[key] != source:
                _fail(f"{key!r} is set both in {set_by[key]} and in {source}: set it in one place only")
            set_by[key] = source
    runs = expand(grid, variants)
    for run in runs:  # exactly what train.py will parse: the config file, the overrides, the run's keys
        run["args"] = overrides + [f"--{k}={format_value(v)}" for k, v in run["settings"].items()]
        try:
            parse_args(defaults, [config] + run["args"])
        except ConfigError as e:
            _fail(f"run {run['name']}: {e}")
    return grid, variants or {}, runs


def _close(key: str, keys) -> str:
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; see `python train.py -h` for the keys"


def _record_grid(sweep_dir: Path, config: str, grid: dict, variants: dict, overrides: list[str]) -> None:
    """Write sweep.json, or check that the folder's existing one describes the same grid."""
    record = {"config": config, "grid": grid, "variants": variants, "overrides": overrides}
    record = json.loads(json.dumps(record))  # tuples -> lists, as they come back from the file
    path = sweep_dir / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in ("grid", "variants", "overrides") if old.get(k) != record[k]]
        if diff:
            _fail(f"{sweep_dir} holds a sweep with another {' and '.join(diff)} ({path}: "
                  + "; ".join(f"{k}={old.get(k)}" for k in diff) + " vs now: "
                  + "; ".join(f"{k}={record[k]}" for k in diff)
                  + f"): pass --sweep_dir=<new folder>, or delete {path} to reuse the folder")
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


# ----------------------------------------------------------------------------- running

def run_status(run_dir: Path) -> str:
    """'finished' | 'diverged' | 'stopped' (summary, neither) | 'failed' (a log, no summary) | 'missing'."""
    summary = _read_json(run_dir / "summary.json")
    if summary:
        return "finished" if summary.get("finished") else "diverged" if summary.get("diverged") else "stopped"
    return "failed" if (run_dir / "train.log").exists() else "missing"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _command(config: str, run: dict, run_dir: Path) -> list[str]:
    """train.py arguments of a run; a run stopped with a checkpoint continues from it."""
    resume = (run_dir / "ckpt.pt").exists() and "init_from" not in run["settings"]
    return [config, *run["args"], f"--out_dir={run_dir}"] + (["--init_from=resume"] if resume else [])


def run_all(config: str, runs: list[dict], sweep_dir: Path) -> None:
    """Run the unfinished runs one after another as `python train.py ...` subprocesses (log: train.log)."""
    for i, run in enumerate(runs, 1):
        run_dir = sweep_dir / run["name"]
        status = run_status(run_dir)
        if status in _DONE:
            print(f"[{i}/{len(runs)}] {run['name']}: {status} already, skipped")
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(TRAIN), *_command(config, run, run_dir)]
        print(f"[{i}/{len(runs)}] {run['name']}: running (log {run_dir / 'train.log'})", flush=True)
        t0 = time.time()
        with open(run_dir / "train.log", "a") as log:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        status, summary = run_status(run_dir), _read_json(run_dir / "summary.json")
        loss = summary.get("final_val_loss")
        print(f"    {status} in {time.time() - t0:.0f} s" + (f", final val loss {loss:.4f}" if loss else ""))
        if rc != 0 and status != "diverged":
            tail = "\n      ".join((run_dir / "train.log").read_text().splitlines()[-15:])
            print(f"    train.py exited with code {rc}; last lines of the log:\n      {tail}")


def dry_run(config: str, runs: list[dict], sweep_dir: Path, nproc_per_node: int) -> None:
    """One torchrun line per unfinished run (for a cluster scheduler); finished runs are counted."""
    done = 0
    for run in runs:
        run_dir = sweep_dir / run["name"]
        if run_status(run_dir) in _DONE:
            done += 1
            continue
        args = _command(config, run, run_dir)
        if not any(a.startswith("--parallelism") for a in args) and "parallelism" not in read_config_file(config):
            args.append("--parallelism=ddp")  # train.py refuses a multi-process launch without a parallelism
        print(shlex.join(["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}", "train.py", *args]))
    print(f"# {len(runs) - done} runs to go, {done} finished or diverged (skipped)")


# ----------------------------------------------------------------------------- results

def collect(runs: list[dict], sweep_dir: Path) -> list[dict]:
    """One row per run: run, swept values, status, the summary.json values, L0 = ln(model vocabulary)."""
    rows = []
    for run in runs:
        run_dir = sweep_dir / run["name"]
        summary, cfg = _read_json(run_dir / "summary.json"), _read_json(run_dir / "config.json")
        values = {k: format_value(v) if isinstance(v, (list, tuple, dict)) else v
                  for k, v in run["values"].items()}
        row = {"run": run["name"], **values, "status": run_status(run_dir)}
        row.update({k: summary.get(k) for k in _SUMMARY_COLUMNS}, diverged=row["status"] == "diverged")
        row.update({k: v for k, v in summary.items() if k not in row and k != "finished"})
        vocab = cfg.get("model_args", {}).get("vocab_size")
        row["loss_at_init"] = math.log(vocab) if vocab else _first_loss(run_dir)
        row["_config"] = cfg
        rows.append(row)
    return rows


def _first_loss(run_dir: Path) -> float | None:
    for rec in _read_jsonl(run_dir / "metrics.jsonl"):
        if rec.get("loss") is not None:
            return rec["loss"]
    return None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def write_csv(rows: list[dict], grid: dict, path: Path) -> None:
    """results.csv: run, swept values, status, the _SUMMARY_COLUMNS, then every other summary key (sorted)."""
    first = ["run", *grid, "status"]
    rest = sorted({k for r in rows for k in r} - set(first) - set(_SUMMARY_COLUMNS) - {"_config"})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=first + _SUMMARY_COLUMNS + rest, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _loss(row: dict) -> float:
    """Final val loss of a run; inf when it diverged (NaN) or has none."""
    x = row.get("final_val_loss")
    return math.inf if row["diverged"] or x is None or not math.isfinite(x) else x


def lr_sensitivity(losses: list[float], loss_at_init: float) -> float:
    """Learning-rate sensitivity (Wortsman et al. 2023, arXiv:2309.14322) as the OEC authors' notebook computes it
    (get_lr_sensitivity; OEC, arXiv:2601.02031):
    LRS = 1/(N-1) * sum_eta [min(L(eta), L0) - min_eta' L(eta')], L0 = the loss at initialisation; a
    diverged run (inf/NaN) counts as L0, and the minimum is taken over the capped losses."""
    if len(losses) < 2:
        raise ValueError("the learning-rate sensitivity needs at least two learning rates")
    capped = [loss_at_init if not math.isfinite(x) else min(x, loss_at_init) for x in losses]
    return sum(c - min(capped) for c in capped) / (len(capped) - 1)


def _norm_inits(cfg: dict) -> tuple:
    """(init of ln_1/ln_f, init of ln_2) of a run as train.py builds them: norm_init(_attn) when set, else
    norm_alpha0(_attn) (model.py Block); equal for a run on the 1-D grid (the diagonal of the 2-D grid)."""
    first = ("raw", cfg["norm_init"]) if cfg.get("norm_init") is not None else ("alpha0", cfg.get("norm_alpha0"))
    if cfg.get("norm_init_attn") is not None:
        return first, ("raw", cfg["norm_init_attn"])
    if cfg.get("norm_init") is None and cfg.get("norm_alpha0_attn") is not None:
        return first, ("alpha0", cfg["norm_alpha0_attn"])
    return first, first


def _paper_loss(row: dict) -> float:
    """Final val loss, NaN for a diverged run or one without a loss: the DyISRU code's DataFrame cell."""
    x = row.get("final_val_loss")
    return math.nan if row["diverged"] or x is None or not math.isfinite(x) else x


def _stability(losses: list[float]) -> tuple[float, float, float]:
    """(best, I, S) of one grid as the DyISRU code's results/plots.py::_compute_metrics: best = nanmin, I =
    #(loss > 1.1 best) / #runs, S = mean(loss <= 1.1 best) - best. A NaN (diverged) run counts in #runs but
    is neither unstable nor in S, exactly as NaN behaves in their comparisons."""
    finite = [x for x in losses if not math.isnan(x)]
    if not finite:
        return math.nan, math.nan, math.nan
    best = min(finite)
    stable = [x for x in finite if x <= 1.1 * best]
    return best, sum(x > 1.1 * best for x in finite) / len(losses), sum(stable) / len(stable) - best


def norm_metrics(rows: list[dict]) -> dict[str, dict]:
    """DyISRU paper metrics per norm (Stollenwerk 2025, arXiv 2503.21708, Sec. 5; computed as the authors'
    results/plots.py::_compute_metrics): L1 = best loss on the 1-D init grid (runs whose ln_2 starts like the
    other norms: the diagonal), L2 = best over the whole 2-D grid, L12 = L1 - L2, I1 / I2 = fraction of the
    1-D / 2-D runs with loss > 1.1 x L1 / L2 (instabilities), S1 / S2 = mean of the other (stable) runs minus
    L1 / L2. A diverged run counts in the number of runs, not as an instability and not in S, as a NaN cell
    of the authors' table does; `diverged` reports how many there were. Norm and inits come from each run's
    config.json."""
    out = {}
    for norm in sorted({r["_config"].get("norm") for r in rows if r["_config"]}):
        mine = [r for r in rows if r["_config"].get("norm") == norm and r["status"] in _DONE]
        if not mine:
            continue
        diag = [r for r in mine if len(set(_norm_inits(r["_config"]))) == 1]
        l1, i1, s1 = _stability([_paper_loss(r) for r in diag])
        l2, i2, s2 = _stability([_paper_loss(r) for r in mine])
        out[norm] = {"L1": l1, "L2": l2, "L12": l1 - l2, "I1": i1, "I2": i2, "S1": s1, "S2": s2,
                     "runs": len(mine), "runs_1d": len(diag), "diverged": sum(r["diverged"] for r in mine)}
    return out


def summarize(grid: dict, rows: list[dict]) -> str:
    """The printed summary: one line per run, LR sensitivity per variant, norm metrics when norms differ."""
    keys = list(grid)
    lines = ["  ".join(f"{k[:16]:>16}" for k in keys) + f"  {'status':>9}  {'final val':>9}  {'best val':>9}"]
    for r in rows:
        fv, bv = None if r["diverged"] else r.get("final_val_loss"), r.get("best_val_loss")
        lines.append("  ".join(f"{format_value(r[k])[:16]:>16}" for k in keys) + f"  {r['status']:>9}  "
                     + (f"{fv:>9.4f}" if fv is not None else f"{'-':>9}") + "  "
                     + (f"{bv:>9.4f}" if bv is not None else f"{'-':>9}"))
    if len(grid.get("learning_rate", [])) >= 2:
        lines.append("learning-rate sensitivity (Wortsman et al. as in OEC; L0 = ln(vocab size); diverged runs "
                     "count as L0):")
        others = [k for k in keys if k != "learning_rate"]
        for group, members in itertools.groupby(sorted(rows, key=lambda r: [str(r[k]) for k in others]),
                                                key=lambda r: tuple(str(r[k]) for k in others)):
            members = list(members)
            label = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or "all runs"
            done = sum(m["status"] in _DONE for m in members)
            if done < len(members) or any(m["loss_at_init"] is None for m in members):
                lines.append(f"  {label}: incomplete ({done}/{len(members)} runs done)")
                continue
            l0 = members[0]["loss_at_init"]
            best = min(members, key=_loss)
            lines.append(f"  {label}: LRS {lr_sensitivity([_loss(m) for m in members], l0):.3f}, best loss "
                         f"{_loss(best):.4f} at learning_rate={best['learning_rate']} (L0 {l0:.3f})")
    norms = norm_metrics(rows)
    if len(norms) >= 2:
        lines.append("norm ablation (DyISRU paper metrics; L1/I1/S1: 1-D init grid, L2/I2/S2: 2-D grid; I: unstable "
                     "fraction, loss > 1.1 x best; S: mean stable - best; diverged runs count only in the runs):")
        lines += [f"  {n:>10}: L1 {m['L1']:.4f}  L2 {m['L2']:.4f}  L12 {m['L12']:.4f}  I1 {m['I1']:.2f}  "
                  f"I2 {m['I2']:.2f}  S1 {m['S1']:.4f}  S2 {m['S2']:.4f}  ({m['runs_1d']} 1-D / {m['runs']} runs, "
                  f"{m['diverged']} diverged)" for n, m in norms.items()]
    return "\n".join(lines)


def plot(grid: dict, rows: list[dict], sweep_dir: Path) -> None:
    """loss_vs_<key>.png (final val loss vs the first numeric swept key, one line per other combination;
    diverged runs drawn as x at L0) and curves.png (training loss vs step of every run)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return
    numeric = [k for k, v in grid.items() if len(v) >= 2 and all(type(x) in (int, float) for x in v)]
    xkey = "learning_rate" if "learning_rate" in numeric else next(iter(numeric), None)
    if xkey is not None:
        others = [k for k in grid if k != xkey]
        fig, ax = plt.subplots(figsize=(6, 4))
        for group in dict.fromkeys(tuple(str(r[k]) for k in others) for r in rows):
            members = sorted((r for r in rows if tuple(str(r[k]) for k in others) == group),
                             key=lambda r: r[xkey])
            xs, ys = [m[xkey] for m in members], [_loss(m) for m in members]
            line, = ax.plot(xs, [y if math.isfinite(y) else math.nan for y in ys], marker="o",
                            label=", ".join(group) or "all runs")
            bad = [(x, m["loss_at_init"]) for x, y, m in zip(xs, ys, members) if not math.isfinite(y)
                   and m["status"] == "diverged" and m["loss_at_init"]]
            if bad:
                ax.plot(*zip(*bad), "x", color=line.get_color(), markersize=9)
        if all(x > 0 for x in grid[xkey]) and max(grid[xkey]) >= 10 * min(grid[xkey]):
            ax.set_xscale("log")
        ax.set(xlabel=xkey, ylabel="final val loss", title=f"{sweep_dir.name} (x = diverged, at L0)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(sweep_dir / f"loss_vs_{xkey}.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        recs = [m for m in _read_jsonl(sweep_dir / r["run"] / "metrics.jsonl") if m.get("loss") is not None]
        if recs:
            ax.plot([m["step"] for m in recs], [m["loss"] for m in recs], label=r["run"], linewidth=1)
    ceiling = max((r["loss_at_init"] for r in rows if r["loss_at_init"]), default=None)
    if ceiling:
        ax.set_ylim(top=1.2 * ceiling)
    ax.set(xlabel="step", ylabel="train loss", title=sweep_dir.name)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(sweep_dir / "curves.png", dpi=120)
    plt.close(fig)
    print(f"wrote {sweep_dir}/curves.png" + (f" and loss_vs_{xkey}.png" if xkey else ""))


# ----------------------------------------------------------------------------- CLI

def _parse_cli(argv: list[str]) -> tuple[str, dict, list[str]]:
    """(config file, sweep options, train.py overrides as --key=value), every key and value checked against
    SWEEP_DEFAULTS and train.py's defaults (configurator.parse_args). `-h` lists the keys and exits."""
    if any(a in ("-h", "--help") for a in argv):
        print_and_exit(help_text(SWEEP_DEFAULTS, __file__).replace("[config.py ...]", "config.py") +
                       "\n  --<any train.py key>=VALUE    # set for every run (`python train.py -h` lists them)")
    defaults = _train_defaults() | SWEEP_DEFAULTS
    configs, items = split_args(defaults, argv)
    if len(configs) != 1:
        _fail(f"usage: python sweep.py config.py [--key=value ...]: give one sweep config file, got {configs} "
              f"(-h lists the keys)")
    opts = {k: v for k, v in parse_args(defaults, argv).items() if k in SWEEP_DEFAULTS}
    return configs[0], opts, [f"--{k}={v}" for k, v in items if k not in SWEEP_DEFAULTS]


def main(argv: list[str] | None = None) -> None:
    config, opts, overrides = _parse_cli(sys.argv[1:] if argv is None else argv)
    grid, variants, runs = load_sweep(config, overrides)
    sweep_dir = Path(opts["sweep_dir"] or Path("sweeps") / Path(config).stem)
    _record_grid(sweep_dir, config, grid, variants, overrides)
    if opts["dry_run"]:
        dry_run(config, runs, sweep_dir, opts["nproc_per_node"])
        return
    print(f"sweep {sweep_dir}: {len(runs)} runs over {', '.join(f'{k} ({len(v)})' for k, v in grid.items())}")
    interrupted = False
    try:
        if not opts["results_only"]:
            run_all(config, runs, sweep_dir)
    except KeyboardInterrupt:
        interrupted = True
    rows = collect(runs, sweep_dir)  # also after Ctrl-C: the table of what has finished so far
    write_csv(rows, grid, sweep_dir / "results.csv")
    print(summarize(grid, rows))
    print(f"wrote {sweep_dir / 'results.csv'}")
    plot(grid, rows, sweep_dir)
    failed = [r["run"] for r in rows if r["status"] in ("failed", "stopped", "missing")]
    if interrupted:
        _fail("interrupted: rerun the same command to continue (finished runs are skipped, a stopped run "
              "resumes)")
    if failed and not opts["results_only"]:
        _fail(f"{len(failed)} run(s) did not finish: {failed[:5]}; see their train.log, fix, and rerun the "
              f"same command (finished runs are skipped)")

if __name__ == "__main__":
    from configurator import run_cli  # bad input: one line `sweep.py: problem: fix`, exit 1
    run_cli("sweep.py", main)
