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

Outputs in the sweep folder, written by results.py: results.csv (one row per run, then one per arm with
replicates), loss_vs_<key>.png, curves.png and evals.png (with matplotlib; skipped with a message without it),
and a printed summary with the learning-rate sensitivity per variant (Wortsman et al. 2023, arXiv:2309.14322, as
the OEC code computes it) and, when norms differ, the DyISRU paper's metrics L1/L2/L12/I1/I2/S1/S2.
"""
import difflib
import itertools
import json
import shlex
import shutil
import signal
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
from results import (
    DONE,
    aggregate,
    collect,
    eval_tables,
    format_value,
    plot,
    read_json,
    run_name,
    run_status,
    summarize,
    write_csv,
)

TRAIN = Path(__file__).resolve().parent / "train.py"
# sweep.py's own keys; every other --key=value is a train.py key, passed to every run
SWEEP_DEFAULTS = dict(
    dry_run=False,  # print one torchrun line per unfinished run instead of running them
    results_only=False,  # run nothing: rewrite results.csv, the plots and the summary from the run folders
    sweep_dir="",  # the sweep folder ('' = sweeps/<config file name>)
    nproc_per_node=8,  # [1, inf) GPUs per node in the --dry_run torchrun lines
)


def _fail(msg: str) -> None:
    raise SystemExit(f"sweep.py: {msg}")


# ----------------------------------------------------------------------------- the grid


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
    if status in DONE:
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
    status, summary = run_status(run_dir), read_json(run_dir / "summary.json")
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
        if run_status(run_dir) in DONE:
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
    from_step = max((read_json(sweep_dir / s["name"] / "summary.json").get("step", 0) for s in starts), default=0)
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
