"""
The results of a sweep folder (sweep.py runs the grid; `python sweep.py CONFIG --results_only` rewrites these from
the run folders): each run's folder name and status, results.csv (one row per run, then one per arm with the mean
and standard error over its replicates and the paired difference to a baseline arm), the printed summary with the
learning-rate sensitivity (Wortsman et al. 2023, arXiv:2309.14322, as the OEC code computes it) and, when norms
differ, the DyISRU paper's metrics L1/L2/L12/I1/I2/S1/S2, the eval tables, and the plots (loss_vs_<key>.png,
curves.png, evals.png; with matplotlib, skipped with a message without it).
"""
import csv
import itertools
import json
import math
import statistics
from pathlib import Path

_SUMMARY_COLUMNS = ["final_train_loss", "final_val_loss", "best_val_loss", "diverged", "tokens",
                    "wall_time_s", "step"]
DONE = ("finished", "diverged")  # run states that are not run again


# ----------------------------------------------------------------------------- run folders

def format_value(v) -> str:
    """A swept value as written in run names and on the command line (`0.001`, `1e-05`, `z_loss`)."""
    return v if isinstance(v, str) else repr(v).replace(" ", "")


def run_name(values: dict) -> str:
    """Deterministic folder name of one run: `key=value,...` in grid order ('/' and spaces become '_')."""
    return ",".join(f"{k}={format_value(v)}" for k, v in values.items()).replace("/", "_").replace(" ", "_")


def run_status(run_dir: Path) -> str:
    """'finished' | 'diverged' | 'stopped' (summary, neither) | 'failed' (a log, no summary) | 'missing'."""
    summary = read_json(run_dir / "summary.json")
    if summary:
        return "finished" if summary.get("finished") else "diverged" if summary.get("diverged") else "stopped"
    return "failed" if (run_dir / "train.log").exists() else "missing"


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or not (yet) valid JSON (a run still writing it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


# ----------------------------------------------------------------------------- results

def collect(runs: list[dict], sweep_dir: Path) -> list[dict]:
    """One row per run: run, swept values, status, the summary.json values, L0 = ln(model vocabulary)."""
    rows = []
    for run in runs:
        run_dir = sweep_dir / run["name"]
        summary, cfg = read_json(run_dir / "summary.json"), read_json(run_dir / "config.json")
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
        mine = [r for r in rows if r["_config"].get("norm") == norm and r["status"] in DONE]
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
            done = sum(m["status"] in DONE for m in members)
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
