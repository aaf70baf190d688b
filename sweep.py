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
with a checkpoint but no summary continues with --init_from=resume). A SIGTERM or SIGINT to sweep.py is
forwarded to the running train.py, which saves; the run is recorded as interrupted (train.log) and resumes on
the next sweep.py. A diverged run (NaN) is a row with diverged=True, not a crash of the sweep.

Optional names in a sweep config (read here; train.py ignores them):

    replicate = 'seed'                        # the swept key whose values are replicates (default: 'seed' if swept)
    paired_baseline = dict(variant='baseline')  # each arm minus this arm, replicate by replicate
    start_run = dict(max_iters=150)           # a first run (per replicate) that every grid run continues from
    plot_evals = ['val_loss', 'fhs_dot_prod']  # eval-record keys drawn per arm against the step (evals.png)

Replicates: an arm is one combination of the other swept keys. results.csv gets, after the runs, one row per
arm (replicate column 'mean', status 'aggregate'): the mean over its replicates of every numeric column, with
the standard error (sample std / sqrt(n)) of the losses in <column>_se; the summary prints mean +- SE per arm;
every plot draws the mean with +- SE bars or bands. paired_baseline adds final_val_loss_diff (+ _se): the mean
over replicates of (arm - that arm with the paired_baseline values) at the same replicate value, which cancels
what the replicates share (data order, init). The learning-rate sensitivity is printed per replicate and as
mean +- SE over them. An arm with a diverged or unfinished replicate gets no mean loss (the summary says why).
start_run: a train.py run (sweep_dir/start_run, with the config, the overrides and these keys) runs first; every
grid run's folder starts as a copy of its checkpoint and metrics.jsonl and continues it (--init_from=resume:
weights, optimizer state, data position), with its own keys; config/oec_mechanism.py uses it.

sweep.py's own keys (SWEEP_DEFAULTS, `python sweep.py -h`): --dry_run, --results_only, --sweep_dir=DIR,
--nproc_per_node=N (for the torchrun lines, default 8); every other --key=value is a train.py key.

Outputs in the sweep folder: results.csv (one row per run, then one per arm with replicates),
loss_vs_<key>.png, curves.png and evals.png (with matplotlib; skipped with a message without it), and a
printed summary with the learning-rate
sensitivity per variant (Wortsman et al. 2023, arXiv:2309.14322, as the OEC code computes it) and, when
norms differ, the DyISRU paper's metrics L1/L2/L12/I1/I2/S1/S2.
"""
import csv
import difflib
import itertools
import json
import math
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from configurator import (
    ConfigError,
    help_text,
    parse_args,
    print_and_exit,
    read_config_file,
    script_defaults,
    split_args,
)

TRAIN = Path(__file__).resolve().parent / "train.py"
# sweep.py's own keys; every other --key=value is a train.py key, passed to every run
SWEEP_DEFAULTS = dict(
    dry_run=False,  # print one torchrun line per unfinished run instead of running them
    results_only=False,  # run nothing: rewrite results.csv, the plots and the summary from the run folders
    sweep_dir="",  # the sweep folder ('' = sweeps/<config file name>)
    nproc_per_node=8,  # [1, inf) GPUs per node in the --dry_run torchrun lines
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


def load_sweep(config: str, overrides: list[str]) -> tuple[dict, dict, list[dict], dict]:
    """Read and check the grid of a config file; returns (grid, variants, runs, extras); extras: replicate,
    paired_baseline, start_run, plot_evals (the optional names) and starts (the start runs, [] without
    start_run). Every problem is an error here, before any run starts: unknown keys, empty lists, unknown
    variants, a key set twice, a replicate or baseline that is not swept."""
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
    defaults = script_defaults(str(TRAIN))
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
    extras = _extras(config, ns, grid)
    start = extras["start_run"]
    for key in start or {}:
        if key in ("out_dir", "init_from", extras["replicate"]) or key in set_by and set_by[key] == "the command line":
            _fail(f"{config}: start_run sets {key!r}, which " + ("sweep.py sets for every run" if key in (
                "out_dir", "init_from") else "is the replicate key" if key == extras["replicate"] else
                "the command line sets too") + ": drop it from start_run")
    runs = expand(grid, variants)
    starts = []
    if start is not None:
        rep = extras["replicate"]
        for value in grid[rep] if rep else [None]:
            values = {rep: value} if rep else {}
            starts.append({"name": ",".join(["start_run"] + ([run_name(values)] if values else [])),
                           "values": values, "settings": {**start, **values}})
        for run in runs:
            run["start"] = next(s["name"] for s in starts if all(run["values"][k] == v for k, v in s["values"].items()))
    for run in starts + runs:  # exactly what train.py will parse: the config file, the overrides, the run's keys
        run["args"] = overrides + [f"--{k}={format_value(v)}" for k, v in run["settings"].items()]
        try:
            parse_args(defaults, [config] + run["args"], str(TRAIN))  # train.py's types and ranges
        except ConfigError as e:
            _fail(f"run {run['name']}: {e}")
    return grid, variants or {}, runs, dict(extras, starts=starts)


def _extras(config: str, ns: dict, grid: dict) -> dict:
    """The optional names of a sweep config (module docstring), checked against the grid."""
    rep = ns.get("replicate", "seed" if "seed" in grid else None)
    if rep is not None and (rep not in grid or rep == "variant"):
        _fail(f"{config}: replicate={rep!r} is not a swept train.py key (swept: {list(grid)}): sweep it, e.g. "
              f"sweep = dict({rep}=[1, 2, 3], ...), or drop replicate")
    base = ns.get("paired_baseline")
    if base is not None:
        if not isinstance(base, dict) or not base or any(k not in grid or k == rep for k in base):
            _fail(f"{config}: paired_baseline={base!r} must name swept keys other than the replicate "
                  f"({rep!r}) and their baseline values, e.g. paired_baseline = dict(variant='baseline')")
        wrong = {k: v for k, v in base.items() if v not in grid[k]}
        if wrong:
            _fail(f"{config}: paired_baseline {wrong} is not in the grid "
                  f"({ {k: grid[k] for k in wrong} }): use a swept value")
    start = ns.get("start_run")
    if start is not None and not isinstance(start, dict):
        _fail(f"{config}: start_run must be a dict of train.py keys, e.g. start_run = dict(max_iters=150)")
    evals = ns.get("plot_evals", [])
    if not isinstance(evals, (list, tuple)) or not all(isinstance(k, str) for k in evals):
        _fail(f"{config}: plot_evals must be a list of eval-record keys, e.g. ['val_loss', 'fhs_dot_prod']")
    return {"replicate": rep, "paired_baseline": base, "start_run": start, "plot_evals": list(evals)}


def _close(key: str, keys) -> str:
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else "; see `python train.py -h` for the keys"


def _record_grid(sweep_dir: Path, config: str, grid: dict, variants: dict, overrides: list[str],
                 start_run: dict | None = None) -> None:
    """Write sweep.json, or check that the folder's existing one describes the same grid (and start run)."""
    record = {"config": config, "grid": grid, "variants": variants, "overrides": overrides}
    if start_run is not None:
        record["start_run"] = start_run
    record = json.loads(json.dumps(record))  # tuples -> lists, as they come back from the file
    path = sweep_dir / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in ("grid", "variants", "overrides", "start_run") if old.get(k) != record.get(k)]
        if diff:
            _fail(f"{sweep_dir} holds a sweep with another {' and '.join(diff)} ({path}: "
                  + "; ".join(f"{k}={old.get(k)}" for k in diff) + " vs now: "
                  + "; ".join(f"{k}={record.get(k)}" for k in diff)
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


def _run_child(cmd: list[str], log) -> tuple[int, str | None]:
    """Run train.py as a child process until it exits: (exit status, the name of the signal that stopped it or
    None). SIGTERM and SIGINT sent to sweep.py are forwarded to the child, which saves a checkpoint at the end of
    its step and exits (train.py), and sweep.py waits for that: a sweep killed by a scheduler leaves no
    train.py running on its own and no run without its checkpoint."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    got = []

    def forward(signum, frame):
        got.append(signal.Signals(signum).name)
        if proc.poll() is None:
            proc.send_signal(signum)
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        rc = proc.wait()  # the handler runs in between; wait() goes on waiting (PEP 475)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return rc, got[0] if got else None


def run_all(config: str, runs: list[dict], sweep_dir: Path, starts: list[dict] = ()) -> None:
    """Run the unfinished runs one after another as `python train.py ...` subprocesses (log: train.log); the
    start runs first, and a grid run that has not begun starts as a copy of its start run (_seed_from_start)."""
    for i, start in enumerate(starts, 1):
        status = _run_one(config, start, sweep_dir / start["name"], f"[start {i}/{len(starts)}]")
        if status != "finished":
            _fail(f"the start run {start['name']} is {status} (see {sweep_dir / start['name'] / 'train.log'}): "
                  f"the grid runs continue from its checkpoint; fix it and rerun the same command")
    for i, run in enumerate(runs, 1):
        run_dir = sweep_dir / run["name"]
        if run.get("start") and run_status(run_dir) == "missing" and not (run_dir / "ckpt.pt").exists():
            _seed_from_start(sweep_dir / run["start"], run_dir)
        _run_one(config, run, run_dir, f"[{i}/{len(runs)}]")


def _seed_from_start(start_dir: Path, run_dir: Path) -> None:
    """A grid run's folder as a copy of its start run's ckpt.pt and metrics.jsonl: train.py resumes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("ckpt.pt", "metrics.jsonl"):
        shutil.copyfile(start_dir / name, run_dir / name)


def _run_one(config: str, run: dict, run_dir: Path, label: str) -> str:
    """Run one train.py unless it is finished or diverged; returns its status. A SIGTERM/SIGINT is forwarded to
    the running train.py (_run_child); once it has saved and exited, the run is recorded as interrupted in its
    train.log and KeyboardInterrupt ends the sweep; the next sweep.py resumes the run."""
    status = run_status(run_dir)
    if status in _DONE:
        print(f"{label} {run['name']}: {status} already, skipped")
        return status
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(TRAIN), *_command(config, run, run_dir)]
    print(f"{label} {run['name']}: running (log {run_dir / 'train.log'})", flush=True)
    t0 = time.time()
    with open(run_dir / "train.log", "a") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        rc, stopped_by = _run_child(cmd, log)
        if stopped_by:
            log.write(f"# sweep.py: interrupted by {stopped_by} (forwarded to train.py, exit {rc}); the next "
                      f"`sweep.py` resumes this run from its checkpoint\n")
    status, summary = run_status(run_dir), _read_json(run_dir / "summary.json")
    if stopped_by:
        print(f"    interrupted by {stopped_by}: train.py saved and exited ({status}); rerun the same command "
              f"to resume it", flush=True)
        raise KeyboardInterrupt
    loss = summary.get("final_val_loss")
    print(f"    {status} in {time.time() - t0:.0f} s" + (f", final val loss {loss:.4f}" if loss else ""))
    if rc != 0 and status != "diverged":
        tail = "\n      ".join((run_dir / "train.log").read_text().splitlines()[-15:])
        print(f"    train.py exited with code {rc}; last lines of the log:\n      {tail}")
    return status


def dry_run(config: str, runs: list[dict], sweep_dir: Path, nproc_per_node: int, starts: list[dict] = ()) -> None:
    """One torchrun line per unfinished run (for a cluster scheduler); finished runs are counted. With start
    runs: their lines first; a grid run's line then copies its start run's checkpoint and resumes it."""
    done = 0
    for run in [*starts, *runs]:
        run_dir = sweep_dir / run["name"]
        if run_status(run_dir) in _DONE:
            done += 1
            continue
        args = _command(config, run, run_dir)
        if not any(a.startswith("--parallelism") for a in args) and "parallelism" not in read_config_file(config):
            args.append("--parallelism=ddp")  # train.py refuses a multi-process launch without a parallelism
        line = shlex.join(["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}", "train.py", *args])
        if run.get("start") and not (run_dir / "ckpt.pt").exists():
            start = shlex.quote(str(sweep_dir / run["start"]))
            line = (f"mkdir -p {shlex.quote(str(run_dir))} && cp {start}/ckpt.pt {start}/metrics.jsonl "
                    f"{shlex.quote(str(run_dir))}/ && {line} --init_from=resume")
        print(line)
    print(f"# {len(starts) + len(runs) - done} runs to go, {done} finished or diverged (skipped)"
          + (f"; the {len(starts)} start run(s) first" if starts else ""))


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
    """results.csv: run, swept values, status, the _SUMMARY_COLUMNS, then every other summary key (sorted); the
    arm rows of aggregate() after the runs, with their own columns (n, *_se, final_val_loss_diff, ...)."""
    first = ["run", *grid, "status"]
    rest = sorted({k for r in rows for k in r if not k.startswith("_")} - set(first) - set(_SUMMARY_COLUMNS))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=first + _SUMMARY_COLUMNS + rest, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


_AGG_SE = ("final_val_loss", "best_val_loss", "final_train_loss")  # arm columns that also get a standard error


def mean_se(xs: list[float]) -> tuple[float, float]:
    """(mean, standard error = sample standard deviation (n - 1) / sqrt(n)); SE is NaN for one value."""
    m = statistics.fmean(xs)
    return m, statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.nan


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _arm_keys(grid: dict, replicate: str | None) -> list[str]:
    return [k for k in grid if k != replicate]


def aggregate(rows: list[dict], grid: dict, replicate: str | None, paired_baseline: dict | None = None) -> list[dict]:
    """One row per arm (a combination of the swept keys other than `replicate`), for results.csv: the mean over
    the arm's replicates of every numeric column, <column>_se for the losses (_AGG_SE), n (replicates),
    n_diverged; no mean loss unless every replicate finished. With paired_baseline, final_val_loss_diff (+ _se):
    the mean over replicate values of (this arm's loss - the baseline arm's loss at the same replicate value),
    the baseline arm having this arm's values with paired_baseline's swapped in. Without a replicate every run
    is an arm of one (n = 1, no SE)."""
    keys = _arm_keys(grid, replicate)
    arms: dict[tuple, list[dict]] = {}
    for r in rows:
        arms.setdefault(tuple(str(r[k]) for k in keys), []).append(r)
    out = []
    for key, members in arms.items():
        arm = {"run": run_name(dict(zip(keys, key))) or "all runs", **{k: members[0][k] for k in keys},
               "status": "aggregate", "n": len(members), "n_diverged": sum(m["diverged"] for m in members),
               "diverged": any(m["diverged"] for m in members)}
        if replicate:
            arm[replicate] = "mean"
        complete = all(m["status"] == "finished" for m in members)
        numeric = {c for m in members for c, v in m.items() if _number(v)} - set(grid)
        for col in sorted(numeric):
            xs = [m.get(col) for m in members]
            ok = all(_number(x) for x in xs) and (complete or col not in _AGG_SE)
            mean, se = mean_se(xs) if ok else (None, None)
            arm[col] = mean
            if col in _AGG_SE:
                arm[col + "_se"] = se
        arm["_members"], arm["_key"] = members, key
        out.append(arm)
    if paired_baseline:
        by_key = {a["_key"]: a for a in out}
        for arm in out:
            base_key = tuple(str(paired_baseline.get(k, v)) if k in paired_baseline else v
                             for k, v in zip(keys, arm["_key"]))
            base = by_key.get(base_key)
            arm["baseline_arm"] = base["run"] if base else None
            if base is None:
                continue
            base_loss = {str(m.get(replicate)): m for m in base["_members"]}
            diffs = []
            for m in arm["_members"]:
                b = base_loss.get(str(m.get(replicate)))
                if b is None or m["status"] != "finished" or b["status"] != "finished" \
                        or not (_number(m.get("final_val_loss")) and _number(b.get("final_val_loss"))):
                    diffs = None
                    break
                diffs.append(m["final_val_loss"] - b["final_val_loss"])
            diff, se = mean_se(diffs) if diffs else (None, None)
            arm["final_val_loss_diff"], arm["final_val_loss_diff_se"] = diff, se
    return out


def _pm(mean, se, fmt: str = ".4f") -> str:
    """'mean +- se' ('mean' alone without an SE, '-' without a mean); fmt '+.4f' signs the mean only."""
    if mean is None:
        return "-"
    return f"{mean:{fmt}}" + (f" +- {se:{fmt.lstrip('+')}}" if se is not None and math.isfinite(se) else "")


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


def summarize(grid: dict, rows: list[dict], arms: list[dict] | None = None, replicate: str | None = None) -> str:
    """The printed summary: one line per run, the arms (mean +- SE over replicates, paired differences), LR
    sensitivity per variant (per replicate, then mean +- SE over them), norm metrics when norms differ."""
    keys = list(grid)
    lines = ["  ".join(f"{k[:16]:>16}" for k in keys) + f"  {'status':>9}  {'final val':>9}  {'best val':>9}"]
    for r in rows:
        fv, bv = None if r["diverged"] else r.get("final_val_loss"), r.get("best_val_loss")
        lines.append("  ".join(f"{format_value(r[k])[:16]:>16}" for k in keys) + f"  {r['status']:>9}  "
                     + (f"{fv:>9.4f}" if fv is not None else f"{'-':>9}") + "  "
                     + (f"{bv:>9.4f}" if bv is not None else f"{'-':>9}"))
    if arms and (replicate or any("final_val_loss_diff" in a for a in arms)):
        n_rep = len(grid[replicate]) if replicate else 1
        base = any(a.get("baseline_arm") for a in arms)
        head = (f"arms: final / best val loss, mean +- SE over {n_rep} replicates of {replicate}" if replicate
                else "runs: final / best val loss")
        if base:
            head += "; diff = final val loss - that of the paired baseline arm" + (
                f" at the same {replicate}" if replicate else "")
        lines.append(head + ":")
        for a in arms:
            why = f" ({a['n_diverged']} of {a['n']} diverged)" if a["n_diverged"] else ""
            diff = (f", diff {_pm(a.get('final_val_loss_diff'), a.get('final_val_loss_diff_se'), '+.4f')}"
                    f" vs {a['baseline_arm']}" if a.get("baseline_arm") else "")
            lines.append(f"  {a['run']}: {_pm(a['final_val_loss'], a['final_val_loss_se'])} / "
                         f"{_pm(a['best_val_loss'], a['best_val_loss_se'])}{diff}{why}")
    if len(grid.get("learning_rate", [])) >= 2:
        lines.append("learning-rate sensitivity (Wortsman et al. as in OEC; L0 = ln(vocab size); diverged runs "
                     "count as L0):")
        others = [k for k in keys if k != "learning_rate"]
        per_group = {}
        for group, members in itertools.groupby(sorted(rows, key=lambda r: [str(r[k]) for k in others]),
                                                key=lambda r: tuple(str(r[k]) for k in others)):
            members = list(members)
            label = ", ".join(f"{k}={v}" for k, v in zip(others, group)) or "all runs"
            done = sum(m["status"] in _DONE for m in members)
            if done < len(members) or any(m["loss_at_init"] is None for m in members):
                lines.append(f"  {label}: incomplete ({done}/{len(members)} runs done)")
                per_group[group] = None
                continue
            l0 = members[0]["loss_at_init"]
            best = min(members, key=_loss)
            per_group[group] = lr_sensitivity([_loss(m) for m in members], l0)
            lines.append(f"  {label}: LRS {per_group[group]:.3f}, best loss "
                         f"{_loss(best):.4f} at learning_rate={best['learning_rate']} (L0 {l0:.3f})")
        if replicate:
            arm_keys = [k for k in others if k != replicate]
            by_arm: dict[tuple, list] = {}
            for group, lrs in per_group.items():
                by_arm.setdefault(tuple(v for k, v in zip(others, group) if k != replicate), []).append(lrs)
            for arm, values in by_arm.items():
                label = ", ".join(f"{k}={v}" for k, v in zip(arm_keys, arm)) or "all runs"
                text = (_pm(*mean_se(values), ".3f") if all(v is not None for v in values)
                        else "incomplete")
                lines.append(f"  {label}: LRS {text} (mean +- SE over {len(values)} replicates of {replicate})")
    norms = norm_metrics(rows)
    if len(norms) >= 2:
        lines.append("norm ablation (DyISRU paper metrics; L1/I1/S1: 1-D init grid, L2/I2/S2: 2-D grid; I: unstable "
                     "fraction, loss > 1.1 x best; S: mean stable - best; diverged runs count only in the runs):")
        lines += [f"  {n:>10}: L1 {m['L1']:.4f}  L2 {m['L2']:.4f}  L12 {m['L12']:.4f}  I1 {m['I1']:.2f}  "
                  f"I2 {m['I2']:.2f}  S1 {m['S1']:.4f}  S2 {m['S2']:.4f}  ({m['runs_1d']} 1-D / {m['runs']} runs, "
                  f"{m['diverged']} diverged)" for n, m in norms.items()]
    return "\n".join(lines)


def _series(members: list[dict], sweep_dir: Path, key: str, from_step: int = 0) -> tuple[list, list, list]:
    """(steps, mean, SE) of metrics.jsonl's `key` over the runs `members` (replicates), at the steps every one of
    them logged (>= from_step); SE is NaN for one run. Records with a null value (a non-finite loss) are left out."""
    per_run = []
    for m in members:
        recs = {r["step"]: r[key] for r in _read_jsonl(sweep_dir / m["run"] / "metrics.jsonl")
                if _number(r.get(key)) and r["step"] >= from_step}
        per_run.append(recs)
    steps = sorted(set.intersection(*(set(r) for r in per_run))) if per_run else []
    stats = [mean_se([r[s] for r in per_run]) for s in steps]
    return steps, [m for m, _ in stats], [se for _, se in stats]


def _arms(rows: list[dict], grid: dict, replicate: str | None) -> dict[str, list[dict]]:
    """Runs grouped by arm (the swept keys other than the replicate), in grid order; label -> runs."""
    keys = _arm_keys(grid, replicate)
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(run_name({k: r[k] for k in keys}) or "all runs", []).append(r)
    return out


def eval_tables(rows: list[dict], grid: dict, replicate: str | None, keys: list[str], sweep_dir: Path,
                from_step: int = 0, max_columns: int = 8) -> str:
    """One table per eval-record key: a row per arm, a column per eval step from from_step on (at most
    max_columns, first and last kept), the value (mean +- SE over replicates)."""
    lines = []
    for key in keys:
        series = {label: _series(m, sweep_dir, key, from_step) for label, m in _arms(rows, grid, replicate).items()}
        steps = sorted({s for st, _, _ in series.values() for s in st})
        if not steps:
            lines.append(f"{key}: not in any eval record")
            continue
        if len(steps) > max_columns:
            steps = [steps[round(i * (len(steps) - 1) / (max_columns - 1))] for i in range(max_columns)]
        width = 17 if replicate else 10
        lines.append(f"{key} at step" + (f" (mean +- SE over {replicate})" if replicate else "") + ":")
        lines.append(f"  {'':>40}" + "".join(f"{s:>{width}}" for s in steps))
        for label, (st, mean, se) in series.items():
            at = {s: (m, e) for s, m, e in zip(st, mean, se)}
            lines.append(f"  {label[:40]:>40}" + "".join(
                f"{_pm(*at[s], '.3f') if s in at else '-':>{width}}" for s in steps))
    return "\n".join(lines)


def plot(grid: dict, rows: list[dict], sweep_dir: Path, replicate: str | None = None,
         plot_evals: list[str] = (), from_step: int = 0) -> None:
    """loss_vs_<key>.png (final val loss vs the first numeric swept key, one line per other combination;
    diverged runs drawn as x at L0), curves.png (training loss vs step) and, with plot_evals, evals.png (one
    panel per eval-record key vs step, from from_step on). With a replicate key, every line is an arm's mean
    over its replicates with +- SE bars (loss_vs) or bands (curves, evals)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)")
        return
    numeric = [k for k, v in grid.items() if k != replicate and len(v) >= 2
               and all(type(x) in (int, float) for x in v)]
    xkey = "learning_rate" if "learning_rate" in numeric else next(iter(numeric), None)
    rep_note = f" (mean +- SE over {replicate})" if replicate else ""
    if xkey is not None:
        others = [k for k in grid if k not in (xkey, replicate)]
        fig, ax = plt.subplots(figsize=(6, 4))
        for group in dict.fromkeys(tuple(str(r[k]) for k in others) for r in rows):
            members = [r for r in rows if tuple(str(r[k]) for k in others) == group]
            xs = sorted({m[xkey] for m in members})
            ys, es, bad = [], [], []
            for x in xs:
                reps = [m for m in members if m[xkey] == x]
                losses = [_loss(m) for m in reps]
                mean, se = mean_se(losses) if all(math.isfinite(y) for y in losses) else (math.nan, math.nan)
                ys.append(mean)
                es.append(se if math.isfinite(se) else 0.0)
                bad += [(x, m["loss_at_init"]) for m, y in zip(reps, losses) if not math.isfinite(y)
                        and m["status"] == "diverged" and m["loss_at_init"]]
            line = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=", ".join(group) or "all runs")
            if bad:
                ax.plot(*zip(*bad), "x", color=line.lines[0].get_color(), markersize=9)
        if all(x > 0 for x in grid[xkey]) and max(grid[xkey]) >= 10 * min(grid[xkey]):
            ax.set_xscale("log")
        ax.set(xlabel=xkey, ylabel="final val loss" + rep_note, title=f"{sweep_dir.name} (x = diverged, at L0)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(sweep_dir / f"loss_vs_{xkey}.png", dpi=120)
        plt.close(fig)
    arms = _arms(rows, grid, replicate)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, members in arms.items():
        steps, mean, se = _series(members, sweep_dir, "loss")
        if steps:
            _band(ax, steps, mean, se, label)
    ceiling = max((r["loss_at_init"] for r in rows if r["loss_at_init"]), default=None)
    if ceiling:
        ax.set_ylim(top=1.2 * ceiling)
    ax.set(xlabel="step", ylabel="train loss" + rep_note, title=sweep_dir.name)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(sweep_dir / "curves.png", dpi=120)
    plt.close(fig)
    written = ["curves.png"] + ([f"loss_vs_{xkey}.png"] if xkey else [])
    if plot_evals:
        fig, axes = plt.subplots(1, len(plot_evals), figsize=(5.5 * len(plot_evals), 4.2), squeeze=False)
        for ax, key in zip(axes[0], plot_evals):
            for label, members in arms.items():
                steps, mean, se = _series(members, sweep_dir, key, from_step)
                if steps:
                    _band(ax, steps, mean, se, label, marker="o")
            ax.set(xlabel="step", ylabel=key + rep_note, title=key)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(sweep_dir.name)
        fig.tight_layout()
        fig.savefig(sweep_dir / "evals.png", dpi=120)
        plt.close(fig)
        written.append("evals.png")
    print(f"wrote {', '.join(str(sweep_dir / w) for w in written)}")


def _band(ax, steps: list, mean: list, se: list, label: str, **kw) -> None:
    """A mean line with a +- SE band (no band where SE is NaN: one replicate)."""
    line, = ax.plot(steps, mean, label=label, linewidth=1, **kw)
    lo = [m - e if math.isfinite(e) else m for m, e in zip(mean, se)]
    hi = [m + e if math.isfinite(e) else m for m, e in zip(mean, se)]
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)


# ----------------------------------------------------------------------------- CLI

def _parse_cli(argv: list[str]) -> tuple[str, dict, list[str]]:
    """(config file, sweep options, train.py overrides as --key=value), every key and value checked against
    SWEEP_DEFAULTS and train.py's defaults (configurator.parse_args). `-h` lists the keys and exits."""
    if any(a in ("-h", "--help") for a in argv):
        print_and_exit(help_text(SWEEP_DEFAULTS, __file__).replace("[config.py ...]", "config.py") +
                       "\n  --<any train.py key>=VALUE    # set for every run (`python train.py -h` lists them)")
    defaults = script_defaults(str(TRAIN)) | SWEEP_DEFAULTS
    configs, items = split_args(defaults, argv)
    if len(configs) != 1:
        _fail(f"usage: python sweep.py config.py [--key=value ...]: give one sweep config file, got {configs} "
              f"(-h lists the keys)")
    opts = {k: v for k, v in parse_args(defaults, argv, __file__).items() if k in SWEEP_DEFAULTS}
    return configs[0], opts, [f"--{k}={v}" for k, v in items if k not in SWEEP_DEFAULTS]


def main(argv: list[str] | None = None) -> None:
    config, opts, overrides = _parse_cli(sys.argv[1:] if argv is None else argv)
    grid, variants, runs, extras = load_sweep(config, overrides)
    starts, replicate = extras["starts"], extras["replicate"]
    sweep_dir = Path(opts["sweep_dir"] or Path("sweeps") / Path(config).stem)
    _record_grid(sweep_dir, config, grid, variants, overrides, extras["start_run"])
    if opts["dry_run"]:
        dry_run(config, runs, sweep_dir, opts["nproc_per_node"], starts)
        return
    print(f"sweep {sweep_dir}: {len(runs)} runs over {', '.join(f'{k} ({len(v)})' for k, v in grid.items())}"
          + (f", continuing {len(starts)} start run(s)" if starts else ""))
    interrupted = False
    try:
        if not opts["results_only"]:
            run_all(config, runs, sweep_dir, starts)
    except KeyboardInterrupt:
        interrupted = True
    rows = collect(runs, sweep_dir)  # also after Ctrl-C: the table of what has finished so far
    arms = aggregate(rows, grid, replicate, extras["paired_baseline"]) if replicate or extras["paired_baseline"] \
        else []
    if not replicate:  # every run is its own arm: its paired difference goes on its own row
        for row, arm in zip(rows, arms):
            row.update({k: arm[k] for k in ("baseline_arm", "final_val_loss_diff") if k in arm})
    write_csv(rows + (arms if replicate else []), grid, sweep_dir / "results.csv")
    print(summarize(grid, rows, arms, replicate))
    from_step = max((_read_json(sweep_dir / s["name"] / "summary.json").get("step", 0) for s in starts), default=0)
    if extras["plot_evals"]:
        print(eval_tables(rows, grid, replicate, extras["plot_evals"], sweep_dir, from_step))
    print(f"wrote {sweep_dir / 'results.csv'}")
    plot(grid, rows, sweep_dir, replicate, extras["plot_evals"], from_step)
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
