"""Tests of results.py: the results of a sweep folder (rows, arms, learning-rate sensitivity, the DyISRU paper's
metrics, the summary), each against a hand-made table or the authors' formula."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

import results
import sweep


def test_lr_sensitivity_on_a_hand_made_table():
    # L0 = 4: capped losses 3.0, 2.8, 3.5, 4.0 (diverged) -> (0.2 + 0 + 0.7 + 1.2) / (4 - 1)
    assert results.lr_sensitivity([3.0, 2.8, 3.5, math.nan], 4.0) == pytest.approx(2.1 / 3)
    assert results.lr_sensitivity([3.0, 5.0, math.inf], 4.0) == pytest.approx(2.0 / 2)  # above L0 counts as L0
    assert results.lr_sensitivity([3.3, 3.3], 10.0) == 0.0
    with pytest.raises(ValueError):
        results.lr_sensitivity([3.0], 4.0)


def test_norm_metrics_as_the_dyisru_code_computes_them():
    inits = [0.5, 1.0, 2.0]
    table = np.array([[3.20, 3.15, 3.90],  # rows: norm_init_attn, cols: norm_init
                      [3.12, 3.60, np.nan],  # one diverged run (off the diagonal)
                      [3.40, 3.30, np.nan]])  # and one on it
    rows = [{"_config": {"norm": "layernorm", "norm_alpha0": 0.5}, "final_val_loss": 3.0, "diverged": False,
             "status": "finished"}]
    for i, attn in enumerate(inits):
        for j, init in enumerate(inits):
            cfg = {"norm": "dyisru_sp", "norm_alpha0": 0.5, "norm_init": init,
                   "norm_init_attn": None if attn == init else attn}
            div = bool(np.isnan(table[i, j]))
            rows.append({"_config": cfg, "final_val_loss": None if div else table[i, j], "diverged": div,
                         "status": "diverged" if div else "finished"})
    m = results.norm_metrics(rows)["dyisru_sp"]
    ref = _compute_metrics_authors(table)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, abs=1e-12), k
    assert m["L12"] == pytest.approx(ref["L1"] - ref["L2"])
    assert (m["runs"], m["runs_1d"], m["diverged"]) == (9, 3, 2)
    assert m["I1"] == pytest.approx(1 / 3) and m["I2"] == pytest.approx(2 / 9)  # NaN: counted, not unstable
    ln = results.norm_metrics(rows)["layernorm"]
    assert (ln["L1"], ln["L2"], ln["I1"], ln["S2"]) == (3.0, 3.0, 0.0, 0.0)
    # the old keys: norm_alpha0_attn set (without norm_init) is off the diagonal, None is on it
    old = [{"_config": {"norm": "dyt", "norm_alpha0": 0.5, "norm_alpha0_attn": a}, "final_val_loss": x,
            "diverged": False, "status": "finished"} for a, x in ((None, 3.3), (1.0, 3.1))]
    d = results.norm_metrics(old)["dyt"]
    assert (d["L1"], d["L2"], d["runs_1d"]) == (3.3, 3.1, 1)


def test_stability_counts_a_run_at_exactly_1_1_best_as_stable():
    """The DyISRU code's rule (results/plots.py::_compute_metrics): unstable means loss > 1.1 x best, so a run
    at exactly 1.1 x best is stable and enters S; just above it is unstable; a NaN run counts only in #runs."""
    best, share, s = results._stability([1.0, 1.1, 1.1 + 1e-9, math.nan])
    assert best == 1.0 and share == 1 / 4 and s == pytest.approx((1.0 + 1.1) / 2 - 1.0)
    assert results._stability([2.0, 2.2 - 1e-9]) == (2.0, 0.0, pytest.approx((2.2 - 1e-9) / 2 + 1.0 - 2.0))


def test_lr_sensitivity_caps_at_the_loss_at_init_exactly():
    """LRS = 1/(N-1) sum [min(L, L0) - min L]: a run at L0 and one above L0 (or diverged) all count as L0."""
    assert results.lr_sensitivity([3.0, 5.0, 5.0 + 1e-9, math.inf], 5.0) == pytest.approx((0 + 2 + 2 + 2) / 3)
    assert results.lr_sensitivity([3.0, 4.0], 5.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        results.lr_sensitivity([3.0], 5.0)


def test_collect_rows_from_finished_diverged_and_missing_runs(tmp_path):
    """One row per run: the swept values (a list as its run-name text, a number as the number), status, the
    summary columns and other summary keys (not `finished`), `diverged` a bool also without a summary,
    L0 = ln(vocab_size) from config.json's model_args, else the first logged loss, and the run's config."""
    runs = sweep.expand({"learning_rate": [0.01, 0.1, 1.0], "betas": [[0.9, 0.95]]})
    a, b, c = (tmp_path / r["name"] for r in runs)
    cfg_a = {"norm": "layernorm", "model_args": {"vocab_size": 100}}
    _run_folder(a, dict(finished=True, diverged=False, final_train_loss=3.1, final_val_loss=3.2, best_val_loss=3.0,
                        tokens=640, wall_time_s=0.5, step=10, mu_norm=0.25), cfg_a, [{"step": 0, "loss": 4.6}])
    _run_folder(b, dict(finished=False, diverged=True, final_val_loss=None, best_val_loss=4.0), {"norm": "dyt"},
                [{"step": 0, "lr": 0.1}, {"step": 1, "loss": 4.2}, {"step": 2, "loss": 4.0}])
    _run_folder(c, None, {}, [])
    ra, rb, rc = results.collect(runs, tmp_path)
    assert ra["run"] == runs[0]["name"] and ra["learning_rate"] == 0.01 and ra["betas"] == "[0.9,0.95]"
    assert {k: ra[k] for k in ("status", "final_train_loss", "final_val_loss", "best_val_loss", "tokens",
                               "mu_norm", "diverged")} == dict(status="finished", final_train_loss=3.1,
                                                               final_val_loss=3.2, best_val_loss=3.0, tokens=640,
                                                               mu_norm=0.25, diverged=False)
    assert "finished" not in ra and ra["loss_at_init"] == pytest.approx(math.log(100)) and ra["_config"] == cfg_a
    assert rb["status"] == "diverged" and rb["diverged"] is True and rb["loss_at_init"] == 4.2
    assert rc["status"] == "missing" and rc["diverged"] is False and rc["loss_at_init"] is None
    assert rc["final_val_loss"] is None and rc["_config"] == {}


def test_loss_of_a_row_is_inf_when_diverged_missing_or_not_finite():
    assert results._loss({"diverged": False, "final_val_loss": 3.0}) == 3.0
    for row in ({"diverged": True, "final_val_loss": 3.0}, {"diverged": False, "final_val_loss": None},
                {"diverged": False, "final_val_loss": math.nan}, {"diverged": False, "final_val_loss": math.inf},
                {"diverged": False}):
        assert results._loss(row) == math.inf, row


def test_summary_header_and_run_lines_are_fixed_width_columns():
    grid = {"learning_rate": [0.01], "a_very_long_key_name_x": ["v"]}
    rows = [{"learning_rate": 0.01, "a_very_long_key_name_x": "v", "status": "finished", "diverged": False,
             "final_val_loss": 3.25, "best_val_loss": 3.125, "_config": {}}]
    lines = results.summarize(grid, rows).splitlines()
    assert lines[0] == (f"{'learning_rate':>16}  {'a_very_long_key_':>16}  {'status':>9}  {'final val':>9}  "
                        f"{'best val':>9}")
    assert lines[1] == f"{'0.01':>16}  {'v':>16}  {'finished':>9}  {3.25:>9.4f}  {3.125:>9.4f}"


def test_summary_text_with_lr_sensitivity_incomplete_groups_and_norm_metrics():
    """The whole printed summary of a 2 x 3 grid, every number computed here by hand: LRS per variant
    (diverged = L0 = ln 100, also with a last eval before it diverged: shown as '-'), the best run, an
    incomplete group, and the DyISRU metrics of two norms."""
    l0 = math.log(100)
    ln, dy = {"norm": "layernorm", "norm_alpha0": 0.5}, {"norm": "dyt", "norm_alpha0": 0.5}

    def row(lr, variant, status, final, best, cfg):
        return {"learning_rate": lr, "variant": variant, "status": status, "diverged": status == "diverged",
                "final_val_loss": final, "best_val_loss": best, "loss_at_init": l0,
                "_config": cfg}
    rows = [row(0.01, "ln", "finished", 3.5, 3.4, ln), row(0.1, "ln", "finished", 3.2, 3.1, ln),
            row(0.01, "dy", "diverged", 3.9, 4.0, dy), row(0.1, "dy", "finished", 3.3, 3.3, dy),
            row(0.01, "aa", "finished", 3.0, 3.0, {}), row(0.1, "aa", "stopped", None, None, {})]
    grid = {"learning_rate": [0.01, 0.1], "variant": ["ln", "dy", "aa"]}
    out = results.summarize(grid, rows).splitlines()
    head = f"{'learning_rate':>16}  {'variant':>16}  {'status':>9}  {'final val':>9}  {'best val':>9}"
    runs = [f"{'0.01':>16}  {'ln':>16}  {'finished':>9}  {'3.5000':>9}  {'3.4000':>9}",
            f"{'0.1':>16}  {'ln':>16}  {'finished':>9}  {'3.2000':>9}  {'3.1000':>9}",
            f"{'0.01':>16}  {'dy':>16}  {'diverged':>9}  {'-':>9}  {'4.0000':>9}",
            f"{'0.1':>16}  {'dy':>16}  {'finished':>9}  {'3.3000':>9}  {'3.3000':>9}",
            f"{'0.01':>16}  {'aa':>16}  {'finished':>9}  {'3.0000':>9}  {'3.0000':>9}",
            f"{'0.1':>16}  {'aa':>16}  {'stopped':>9}  {'-':>9}  {'-':>9}"]
    lrs = ["learning-rate sensitivity (Wortsman et al. as in OEC; L0 = ln(vocab size); diverged runs count as L0):",
           "  variant=aa: incomplete (1/2 runs done)",  # a stopped run: not done, though its L0 is known
           f"  variant=dy: LRS {l0 - 3.3:.3f}, best loss 3.3000 at learning_rate=0.1 (L0 {l0:.3f})",
           "  variant=ln: LRS 0.300, best loss 3.2000 at learning_rate=0.1 (L0 4.605)"]
    norms = ["norm ablation (DyISRU paper metrics; L1/I1/S1: 1-D init grid, L2/I2/S2: 2-D grid; I: unstable "
             "fraction, loss > 1.1 x best; S: mean stable - best; diverged runs count only in the runs):",
             "         dyt: L1 3.3000  L2 3.3000  L12 0.0000  I1 0.00  I2 0.00  S1 0.0000  S2 0.0000  "
             "(2 1-D / 2 runs, 1 diverged)",
             "   layernorm: L1 3.2000  L2 3.2000  L12 0.0000  I1 0.00  I2 0.00  S1 0.1500  S2 0.1500  "
             "(2 1-D / 2 runs, 0 diverged)"]
    assert out == [head, *runs, *lrs, *norms]
    one_norm = results.summarize({"learning_rate": [0.01]}, [dict(rows[0])])  # one lr, one norm: no LRS, no norms
    assert one_norm.splitlines() == [f"{'learning_rate':>16}  {'status':>9}  {'final val':>9}  {'best val':>9}",
                                     f"{'0.01':>16}  {'finished':>9}  {'3.5000':>9}  {'3.4000':>9}"]


def test_norm_inits_pair_decides_the_diagonal():
    """(init of ln_1/ln_f, init of ln_2) as train.py builds them: norm_init (raw) wins over norm_alpha0; an
    attention init equal to the other one, set explicitly, is still on the diagonal of the 2-D grid."""
    inits = results._norm_inits
    assert inits({"norm_init": 1.0, "norm_alpha0": 0.5, "norm_init_attn": 1.0}) == (("raw", 1.0), ("raw", 1.0))
    assert inits({"norm_init": 1.0, "norm_alpha0": 0.5}) == (("raw", 1.0), ("raw", 1.0))
    assert inits({"norm_init": 1.0, "norm_init_attn": 2.0}) == (("raw", 1.0), ("raw", 2.0))
    assert inits({"norm_alpha0": 0.5, "norm_alpha0_attn": 0.5}) == (("alpha0", 0.5), ("alpha0", 0.5))
    assert inits({"norm_alpha0": 0.5, "norm_alpha0_attn": 1.0}) == (("alpha0", 0.5), ("alpha0", 1.0))
    assert inits({"norm_init": 1.0, "norm_alpha0_attn": 2.0}) == (("raw", 1.0), ("raw", 1.0))  # raw wins
    assert inits({"norm_alpha0": 0.5, "norm_init_attn": 0.5}) == (("alpha0", 0.5), ("raw", 0.5))
    with pytest.raises(ValueError, match=r"^the learning-rate sensitivity needs at least two learning rates$"):
        results.lr_sensitivity([], 5.0)


def test_summary_labels_long_values_and_a_norm_without_finished_runs():
    """Groups of several other keys are labelled `k=v, k=v`; a grid of learning rates only is "all runs"; a
    value is cut to 16 characters; a norm whose runs are not done is left out, the norms after it are not."""
    def row(lr, tag, final, cfg, status="finished"):
        return {"learning_rate": lr, "tag": tag, "z_loss": 0.0, "status": status, "diverged": False,
                "final_val_loss": final, "best_val_loss": final, "loss_at_init": 5.0, "_config": cfg}
    long = "a_value_of_twenty_chars"
    rows = [row(0.01, long, 3.5, {"norm": "dyt"}, "missing"), row(0.1, long, 3.0, {"norm": "dyt"}, "failed"),
            row(0.01, "b", 3.5, {"norm": "layernorm"}), row(0.1, "b", 3.0, {"norm": "layernorm"}),
            row(0.01, "c", 3.3, {"norm": "rmsnorm"}), row(0.1, "c", 3.0, {"norm": "rmsnorm"})]
    out = results.summarize({"learning_rate": [0.01, 0.1], "tag": [long, "b", "c"], "z_loss": [0.0]}, rows)
    assert f"{'0.01':>16}  {long[:16]:>16}  {'0.0':>16}  {'missing':>9}" in out.splitlines()[1]
    assert f"  tag={long}, z_loss=0.0: incomplete (0/2 runs done)" in out.splitlines()
    assert "  tag=b, z_loss=0.0: LRS 0.500, best loss 3.0000 at learning_rate=0.1 (L0 5.000)" in out.splitlines()
    assert sorted(results.norm_metrics(rows)) == ["layernorm", "rmsnorm"]
    only_lr = results.summarize({"learning_rate": [0.01, 0.1]}, rows[2:4])
    assert "  all runs: LRS 0.500, best loss 3.0000 at learning_rate=0.1 (L0 5.000)" in only_lr.splitlines()


def test_paper_loss_is_nan_when_diverged_missing_or_not_finite():
    """The DyISRU table's cell: the final val loss, NaN for a diverged run or one without a finite loss."""
    assert results._paper_loss({"diverged": False, "final_val_loss": 3.0}) == 3.0
    for row in ({"diverged": True, "final_val_loss": 3.0}, {"diverged": False, "final_val_loss": None},
                {"diverged": False, "final_val_loss": math.inf}, {"diverged": False}):
        assert math.isnan(results._paper_loss(row)), row


def _compute_metrics_authors(table: np.ndarray) -> dict:
    """The DyISRU code's results/plots.py::_compute_metrics, transcribed: rows/cols = init of ln_2 / of the
    other norms, NaN = a diverged run."""
    m = {"L1": float(np.nanmin(np.diag(table))), "L2": float(np.nanmin(table))}
    for k, values in (("1", np.diag(table)), ("2", table.flatten())):
        best = m["L" + k]
        m["I" + k] = len([v for v in values if v > best * 1.1]) / len(values)
        m["S" + k] = float(np.mean([v for v in values if v <= best * 1.1]) - best)
    return m


def _run_folder(d: Path, summary: dict | None, config: dict, metrics: list[dict]) -> None:
    """A run folder as train.py leaves it (summary.json, config.json, metrics.jsonl); summary None = no summary."""
    d.mkdir(parents=True)
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    (d / "config.json").write_text(json.dumps(config))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
