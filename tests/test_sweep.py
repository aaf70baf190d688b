"""sweep.py: grid expansion and names, bad inputs before any run, resume-skip, results.csv, LR sensitivity
and norm metrics on hand-made tables, and an end-to-end sweep of two tiny train.py runs."""
import csv
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN, read_jsonl

import results
import sweep
from configurator import ConfigError

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for train.py (same config mechanism and run-folder contract) so that the sweep logic is
# tested in milliseconds: loss = 3 + |log10(lr) + 1.5| - 100 * z_loss (+ _fake_loss's noise for a seed other than the
# default); lr >= 1 without z_loss diverges (NaN). With FAKE_CKPT set it writes ckpt.pt (its own name) unless
# one is there; a resumed run logs `name<the name in its ckpt.pt` in FAKE_CALLS.
FAKE_TRAIN = '''
import json, math, os, sys
from pathlib import Path
out_dir = 'out'
learning_rate = 1e-3
z_loss = 0.0
seed = 1337
init_from = 'scratch'
norm = 'layernorm'
norm_alpha0 = 0.5
norm_alpha0_attn = None
max_iters = 10
device = 'cuda' if os.environ.get('NO_SUCH_VAR') else 'cpu'
from configurator import configure
config = configure(globals(), sys.argv[1:])
d = Path(out_dir)
d.mkdir(parents=True, exist_ok=True)
resumed = '<' + (d / 'ckpt.pt').read_text() if init_from == 'resume' else ''
with open(os.environ['FAKE_CALLS'], 'a') as f:
    f.write(d.name + resumed + '\\n')
if os.environ.get('FAKE_CKPT') and not (d / 'ckpt.pt').exists():
    (d / 'ckpt.pt').write_text(d.name)
noise = 0.0 if seed == 1337 else 0.01 * seed * (1 + 1000 * z_loss) * (1 + learning_rate)
loss = 3 + abs(math.log10(learning_rate) + 1.5) - 100 * z_loss + noise
diverged = learning_rate >= 1 and z_loss == 0
(d / 'config.json').write_text(json.dumps(dict(config, model_args={'vocab_size': 100})))
curve = [json.dumps({'step': s, 'loss': 4.6 - s * 0.1}) + '\\n' for s in range(5)]
(d / 'metrics.jsonl').write_text(''.join(curve))
(d / 'summary.json').write_text(json.dumps(dict(
    finished=not diverged, diverged=diverged, final_train_loss=None if diverged else loss - 0.1,
    final_val_loss=None if diverged else loss, best_val_loss=loss, tokens=640, wall_time_s=0.5,
    step=max_iters, mu_norm=0.25)))
sys.exit(1 if diverged else 0)
'''


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(sweep, "TRAIN", script)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.txt"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "calls.txt"


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "config" / "lr_sweep.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return str(path.relative_to(tmp_path))


GRID = """max_iters = 5
sweep = dict(learning_rate=[0.01, 0.1, 1.0])
variants = dict(baseline={}, z_loss=dict(z_loss=1e-3))
"""


def test_expand_names_settings_and_args(tmp_path, fake_train):
    grid, _, runs, _ = sweep.load_sweep(_config(tmp_path, GRID), ["--norm=rmsnorm"])
    assert grid == {"learning_rate": [0.01, 0.1, 1.0], "variant": ["baseline", "z_loss"]}
    assert [r["name"] for r in runs] == [
        "learning_rate=0.01,variant=baseline", "learning_rate=0.01,variant=z_loss",
        "learning_rate=0.1,variant=baseline", "learning_rate=0.1,variant=z_loss",
        "learning_rate=1.0,variant=baseline", "learning_rate=1.0,variant=z_loss"]
    assert runs[1]["settings"] == {"z_loss": 1e-3, "learning_rate": 0.01}
    assert runs[1]["args"] == ["--norm=rmsnorm", "--z_loss=0.001", "--learning_rate=0.01"]
    assert results.run_name({"norm": "dyt", "norm_alpha0": 1e-05, "tag": "a/b c"}) \
        == "norm=dyt,norm_alpha0=1e-05,tag=a_b_c"


@pytest.mark.parametrize("text, overrides, message", [
    ("sweep = dict(learning_rat=[1e-3])", [],
     r"'learning_rat' is not a train.py config key; did you mean learning_rate"),
    ("sweep = dict(learning_rate=[])", [], r"'learning_rate' needs a non-empty list"),
    ("sweep = dict(learning_rate=['fast'])", [], r"learning_rate.*expects float"),
    ("sweep = dict(variant=['a'])", [], r"defines no `variants"),
    ("sweep = dict(variant=['b'])\nvariants = dict(a={})", [], r"variant\(s\) \['b'\] are not in variants"),
    ("sweep = dict(learning_rate=[1e-3])", ["--learning_rate=0.1"],
     r"set both in the command line and in sweep"),
    ("sweep = dict(z_loss=[0.0])\nvariants = dict(a=dict(z_loss=1.0))", [],
     r"'z_loss' is set both in sweep and"),
    ("variants = dict(a=dict(z_los=1.0))", [], r"run variant=a: unknown config key 'z_los'"),
    ("max_iters = 3", [], r"defines no `sweep"),
])
def test_bad_inputs_fail_before_any_run(tmp_path, fake_train, text, overrides, message):
    with pytest.raises(SystemExit, match=message):
        sweep.main([_config(tmp_path, text), *overrides, "--sweep_dir=sw"])
    assert not (tmp_path / "sw").exists() and not fake_train.exists()


def test_cli_keys_go_through_configurator(tmp_path, fake_train, capsys):
    """sweep.py's own keys (SWEEP_DEFAULTS) and train.py overrides in configurator's forms (--key=value, --key
    value, a bare bool --flag); -h lists the own keys with default and comment; a misspelt key stops with the
    closest key, before anything is written."""
    with pytest.raises(SystemExit) as e:
        sweep.main(["-h"])
    assert e.value.code == 0
    help_lines = capsys.readouterr().out.splitlines()
    for key, default in sweep.SWEEP_DEFAULTS.items():
        line = next(ln for ln in help_lines if ln.strip().startswith(f"--{key} "))
        assert repr(default) in line and "# " in line, line
    config = _config(tmp_path, GRID)
    sweep.main([config, "--sweep_dir", "sw", "--dry_run", "--nproc_per_node", "2", "--max_iters", "3"])
    first = shlex.split(capsys.readouterr().out.splitlines()[0])
    assert first[2] == "--nproc_per_node=2" and first[5] == "--max_iters=3"
    with pytest.raises(ConfigError, match="did you mean dry_run"):
        sweep.main([config, "--sweep_dir=sw2", "--dryrun"])
    with pytest.raises(ConfigError, match="'nproc_per_node' expects int"):
        sweep.main([config, "--sweep_dir=sw2", "--nproc_per_node=eight"])
    assert not (tmp_path / "sw2").exists() and not fake_train.exists()


def test_refuses_a_folder_with_another_grid(tmp_path, fake_train, capsys):
    sweep.main([_config(tmp_path, GRID), "--sweep_dir=sw", "--dry_run"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and lines[-1] == "# 6 runs to go, 0 finished or diverged (skipped)"
    assert shlex.split(lines[0]) == ["torchrun", "--standalone", "--nproc_per_node=8", "train.py",
                                     "config/lr_sweep.py", "--learning_rate=0.01",
                                     "--out_dir=sw/learning_rate=0.01,variant=baseline", "--parallelism=ddp"]
    with pytest.raises(SystemExit, match=r"sw holds a sweep with another grid .* --sweep_dir=<new folder>"):
        sweep.main([_config(tmp_path, GRID.replace("1.0]", "3.0]")), "--sweep_dir=sw"])
    with pytest.raises(SystemExit, match=r"another overrides"):
        sweep.main([_config(tmp_path, GRID), "--sweep_dir=sw", "--norm=dyt"])
    assert not fake_train.exists()


def test_runs_resume_skip_csv_and_summary(tmp_path, fake_train, capsys):
    config = _config(tmp_path, GRID)
    sweep.main([config, "--sweep_dir=sw"])
    out = capsys.readouterr().out
    assert len(fake_train.read_text().split()) == 6
    with open(tmp_path / "sw" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    assert header[:4] == ["run", "learning_rate", "variant", "status"]
    assert header[4:11] == ["final_train_loss", "final_val_loss", "best_val_loss", "diverged", "tokens",
                            "wall_time_s", "step"]
    assert {"mu_norm", "loss_at_init"} <= set(header)
    by_run = {r["run"]: r for r in rows}
    assert by_run["learning_rate=1.0,variant=baseline"]["status"] == "diverged"
    assert by_run["learning_rate=1.0,variant=baseline"]["diverged"] == "True"
    assert float(by_run["learning_rate=0.1,variant=z_loss"]["final_val_loss"]) == pytest.approx(3.4)
    # baseline: losses 3.5, 3.5, diverged (= L0 = ln 100); z_loss: 3.4, 3.4, 4.4
    l0 = math.log(100)
    assert f"variant=baseline: LRS {(l0 - 3.5) / 2:.3f}" in out
    assert f"variant=z_loss: LRS {1.0 / 2:.3f}" in out
    assert (tmp_path / "sw" / "curves.png").is_file()
    assert (tmp_path / "sw" / "loss_vs_learning_rate.png").is_file()
    sweep.main([config, "--sweep_dir=sw"])  # everything finished or diverged: nothing runs again
    assert len(fake_train.read_text().split()) == 6
    assert capsys.readouterr().out.count("skipped") == 6
    (tmp_path / "sw" / "learning_rate=0.1,variant=z_loss" / "summary.json").unlink()  # an interrupted run
    sweep.main([config, "--sweep_dir=sw"])
    assert fake_train.read_text().split()[6:] == ["learning_rate=0.1,variant=z_loss"]


def _fake_loss(lr: float, z: float, seed: int) -> float:
    """FAKE_TRAIN's final val loss, written out again for the expected values."""
    return 3 + abs(math.log10(lr) + 1.5) - 100 * z + 0.01 * seed * (1 + 1000 * z) * (1 + lr)


SEEDS_GRID = """max_iters = 5
sweep = dict(learning_rate=[0.01, 0.3], seed=[1, 2])
variants = dict(baseline={}, z_loss=dict(z_loss=1e-3))
paired_baseline = dict(variant='baseline')
"""


def test_seeds_are_replicates_mean_se_paired_difference_and_lrs(tmp_path, fake_train, capsys):
    """A 2-seed sweep: results.csv gets one row per arm with the mean and standard error over the seeds, the
    paired difference to the baseline arm at the same seed, and the summary prints them and the LR sensitivity
    per seed and as mean +- SE; every number is checked against numpy on the fake's known losses."""
    sweep.main([_config(tmp_path, SEEDS_GRID), "--sweep_dir=sw"])
    out = capsys.readouterr().out
    with open(tmp_path / "sw" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    runs, arms = rows[:8], rows[8:]
    assert [r["status"] for r in runs] == ["finished"] * 8 and len(arms) == 4
    assert all(a["seed"] == "mean" and a["status"] == "aggregate" and a["n"] == "2" for a in arms)
    loss = {(lr, v, s): _fake_loss(lr, 1e-3 if v == "z_loss" else 0.0, s)
            for lr in (0.01, 0.3) for v in ("baseline", "z_loss") for s in (1, 2)}
    for r in runs:
        key = float(r["learning_rate"]), r["variant"], int(r["seed"])
        assert float(r["final_val_loss"]) == pytest.approx(loss[key])
    se = lambda x: np.std(x, ddof=1) / np.sqrt(len(x))  # noqa: E731
    for a in arms:
        lr, v = float(a["learning_rate"]), a["variant"]
        x = np.array([loss[lr, v, s] for s in (1, 2)])
        d = x - np.array([loss[lr, "baseline", s] for s in (1, 2)])
        assert a["run"] == f"learning_rate={a['learning_rate']},variant={v}"
        assert float(a["final_val_loss"]) == pytest.approx(x.mean())
        assert float(a["final_val_loss_se"]) == pytest.approx(se(x))
        assert float(a["final_val_loss_diff"]) == pytest.approx(d.mean(), abs=1e-12)
        assert float(a["final_val_loss_diff_se"]) == pytest.approx(se(d), abs=1e-12)
        assert a["baseline_arm"] == f"learning_rate={a['learning_rate']},variant=baseline"
        assert f"{a['run']}: {x.mean():.4f} +- {se(x):.4f}" in out
        if v == "z_loss":  # a real paired difference with a real spread
            assert d.mean() < -0.05 and se(d) > 1e-3
            assert f"diff {d.mean():+.4f} +- {se(d):.4f} vs {a['baseline_arm']}" in out
    l0 = math.log(100)
    for v in ("baseline", "z_loss"):
        per_seed = []
        for s in (1, 2):
            xs = [loss[lr, v, s] for lr in (0.01, 0.3)]
            per_seed.append(sum(min(x, l0) - min(xs) for x in xs) / (len(xs) - 1))
            assert f"seed={s}, variant={v}: LRS {per_seed[-1]:.3f}" in out
        m, e = np.mean(per_seed), se(per_seed)
        assert f"variant={v}: LRS {m:.3f} +- {e:.3f} (mean +- SE over 2 replicates of seed)" in out
    assert (tmp_path / "sw" / "loss_vs_learning_rate.png").is_file() and (tmp_path / "sw" / "curves.png").is_file()


def test_start_run_per_seed_is_what_every_grid_run_continues(tmp_path, fake_train, monkeypatch, capsys):
    """start_run: one start run per replicate runs first; each grid run's folder starts as a copy of the start
    run of its seed and resumes it (--init_from=resume); --dry_run prints the copy before the torchrun line."""
    monkeypatch.setenv("FAKE_CKPT", "1")
    config = _config(tmp_path, "start_run = dict(max_iters=3)\nsweep = dict(seed=[1, 2])\n"
                               "variants = dict(a={}, b=dict(z_loss=1e-3))\n")
    sweep.main([config, "--sweep_dir=dry", "--dry_run"])
    lines = capsys.readouterr().out.splitlines()
    assert "--max_iters=3 --seed=1 --out_dir=dry/start_run,seed=1 " in lines[0]
    assert lines[2].startswith("mkdir -p dry/seed=1,variant=a && cp dry/start_run,seed=1/ckpt.pt "
                               "dry/start_run,seed=1/metrics.jsonl dry/seed=1,variant=a/ && torchrun ")
    assert lines[2].endswith("--init_from=resume") and lines[-1].startswith("# 6 runs to go")
    sweep.main([config, "--sweep_dir=sw"])
    calls = fake_train.read_text().split()
    assert calls == ["start_run,seed=1", "start_run,seed=2", "seed=1,variant=a<start_run,seed=1",
                     "seed=1,variant=b<start_run,seed=1", "seed=2,variant=a<start_run,seed=2",
                     "seed=2,variant=b<start_run,seed=2"]
    with pytest.raises(SystemExit, match="start_run sets 'seed', which is the replicate key"):
        sweep.main([_config(tmp_path, "start_run = dict(seed=3)\nsweep = dict(seed=[1, 2])\n"), "--sweep_dir=x"])


def _random_tokens_dataset(data: Path) -> None:
    """A nanoGPT-layout folder of uniform random tokens (vocab 64): the loss cannot go below ln 64."""
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rng.integers(0, 64, 20000, dtype=np.uint16).tofile(data / "train.bin")
    rng.integers(0, 64, 4000, dtype=np.uint16).tofile(data / "val.bin")
    (data / "meta.json").write_text(json.dumps({"vocab_size": 64, "dtype": "uint16"}))


@pytest.mark.slow
def test_end_to_end_two_tiny_train_runs(tmp_path, monkeypatch, capsys):
    if not sweep.TRAIN.is_file():
        pytest.skip("train.py does not exist yet (the train engineer writes it)")
    _random_tokens_dataset(tmp_path / "data" / "tiny")
    (tmp_path / "tiny.py").write_text(
        "dataset = 'tiny'\ndata_root = 'data'\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\n"
        "batch_size = 4\nmax_iters = 6\nwarmup_iters = 2\nlr_decay_iters = 6\neval_interval = 3\n"
        "eval_iters = 2\n"
        "log_interval = 1\nsample_tokens = 0\ndevice = 'cpu'\ndtype = 'float32'\n"
        "sweep = dict(inject_nonfinite_at_step=[-1, 4])\n")
    monkeypatch.chdir(tmp_path)
    sweep.main(["tiny.py", "--learning_rate=0.01"])
    with open(tmp_path / "sweeps" / "tiny" / "results.csv") as f:
        rows = {r["inject_nonfinite_at_step"]: r for r in csv.DictReader(f)}
    assert rows["-1"]["status"] == "finished" and rows["-1"]["diverged"] == "False"
    assert float(rows["-1"]["final_val_loss"]) < math.log(64) + 0.5
    assert rows["-1"]["tokens"] == str(6 * 4 * 16)
    assert rows["4"]["status"] == "diverged" and rows["4"]["diverged"] == "True"
    assert rows["-1"]["mu_norm"] and rows["-1"]["logits_mean_mean"]  # final diagnostics from summary.json
    assert float(rows["-1"]["loss_at_init"]) == pytest.approx(math.log(64))


@pytest.mark.slow
def test_norm_ablation_metrics_from_real_train_runs(tmp_path, monkeypatch, capsys):
    """A tiny norm grid run through train.py: the diagonal (1-D) runs are found from each run's config.json,
    and the printed L1 / L2 / L12 are taken over the right runs' own final losses."""
    _random_tokens_dataset(tmp_path / "data" / "tiny")
    (tmp_path / "norms.py").write_text(
        "dataset = 'tiny'\ndata_root = 'data'\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\n"
        "batch_size = 4\nmax_iters = 4\nwarmup_iters = 1\nlr_decay_iters = 4\neval_interval = 4\neval_iters = 2\n"
        "log_interval = 1\nsample_tokens = 0\ndevice = 'cpu'\ndtype = 'float32'\nlearning_rate = 0.01\n"
        "variants = dict(ln=dict(norm='layernorm'), d1=dict(norm='dyisru_sp', norm_init=1.0),\n"
        "                d2=dict(norm='dyisru_sp', norm_init=2.0),\n"
        "                d12=dict(norm='dyisru_sp', norm_init=1.0, norm_init_attn=2.0))\n")
    monkeypatch.chdir(tmp_path)
    sweep.main(["norms.py"])
    with open(tmp_path / "sweeps" / "norms" / "results.csv") as f:
        loss = {r["variant"]: float(r["final_val_loss"]) for r in csv.DictReader(f)}
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("dyisru_sp:"))
    l1, l2 = min(loss["d1"], loss["d2"]), min(loss["d1"], loss["d2"], loss["d12"])  # d12 is off the diagonal
    assert f"L1 {l1:.4f}" in line and f"L2 {l2:.4f}" in line and f"L12 {l1 - l2:.4f}" in line
    assert "(2 1-D / 3 runs, 0 diverged)" in line


@pytest.mark.slow
def test_sigterm_reaches_the_train_child_which_saves_and_resumes_on_the_next_sweep(tmp_path):
    """A scheduler's SIGTERM to sweep.py: forwarded to its train.py child, which saves at the end of its step and
    exits; sweep.py waits for it, records the run as interrupted and exits non-zero; no train.py is left running.
    The same command again resumes the run from its checkpoint and finishes it, no step lost or repeated."""
    _random_tokens_dataset(tmp_path / "data" / "tiny")
    (tmp_path / "tiny.py").write_text(  # checkpoints every 2 steps, each 0.3 s slower: the run lasts ~6 s
        "dataset = 'tiny'\ndata_root = 'data'\nn_layer = 1\nn_head = 2\nn_embd = 16\nblock_size = 16\n"
        "batch_size = 4\nmax_iters = 40\nwarmup_iters = 2\nlr_decay_iters = 40\neval_interval = 2\n"
        "eval_iters = 1\nlog_interval = 1\nsample_tokens = 0\ndevice = 'cpu'\ndtype = 'float32'\n"
        "debug_ckpt_sleep = 0.3\nsweep = dict(learning_rate=[0.01])\n")
    cmd = [sys.executable, str(ROOT / "sweep.py"), "tiny.py"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    run_dir = tmp_path / "sweeps" / "tiny" / "learning_rate=0.01"
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    t0 = time.time()
    while not ((run_dir / "ckpt.pt").exists() and (run_dir / ".lock").exists()):
        assert proc.poll() is None and time.time() - t0 < 180, proc.stdout.read()[-3000:]
        time.sleep(0.05)
    child = json.loads((run_dir / ".lock").read_text())["pid"]
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1 and "interrupted by SIGTERM" in out, out[-3000:]
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the child has exited (and was waited for)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert not summary["finished"] and summary["step"] < 40
    assert "# sweep.py: interrupted by SIGTERM" in (run_dir / "train.log").read_text()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert log.count("$ ") == 2 and log.rsplit("$ ", 1)[1].splitlines()[0].endswith("--init_from=resume")
    assert json.loads((run_dir / "summary.json").read_text())["finished"]
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 41))


# -----------------------------------------------------------------------------------------------------------
# sweep.py end to end with the real train.py on the shared tiny dataset (data.py's output): 2
# learning rates x 2 variants = 4 real runs. Every number in results.csv is checked against the run folders train.py
# wrote (metrics.jsonl, summary.json, config.json), and the losses against what training must do: start at ~ln V,
# fall clearly at a usable learning rate, barely move at a tiny one. The printed learning-rate sensitivity is
# recomputed from the CSV with the OEC paper's formula. A second invocation runs nothing.

LRS = [1e-5, 3e-2]


@pytest.fixture(scope='module')
def swept(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sweep')
    keys = dict(TINY_TRAIN, data_root=str(tiny_dataset.parent), dataset=tiny_dataset.name, max_iters=8,
                eval_interval=4, lr_decay_iters=8, min_lr=1e-6, warmup_iters=1)
    keys.pop('learning_rate')
    text = ''.join(f'{k} = {v!r}\n' for k, v in keys.items())
    text += f"sweep = dict(learning_rate={LRS!r})\nvariants = dict(baseline={{}}, z_loss=dict(z_loss=1e-2))\n"
    (tmp / 'tiny_sweep.py').write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        sweep.main(['tiny_sweep.py'])
    return tmp / 'sweeps' / 'tiny_sweep'


def _rows(sweep_dir):
    with open(sweep_dir / 'results.csv') as f:
        return {(float(r['learning_rate']), r['variant']): r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_results_csv_holds_the_runs_real_losses(swept):
    rows = _rows(swept)
    assert sorted(rows) == sorted((lr, v) for lr in LRS for v in ('baseline', 'z_loss'))
    at_init = {}
    for (lr, variant), row in rows.items():
        run = swept / row['run']
        evals = [r for r in read_jsonl(run / 'metrics.jsonl') if 'val_loss' in r]
        logs = [r for r in read_jsonl(run / 'metrics.jsonl') if 'loss' in r]
        summary = json.loads((run / 'summary.json').read_text())
        cfg = json.loads((run / 'config.json').read_text())
        assert cfg['learning_rate'] == lr and cfg['z_loss'] == (1e-2 if variant == 'z_loss' else 0.0)
        assert row['status'] == 'finished' and row['diverged'] == 'False'
        assert [e['step'] for e in evals] == [0, 4, 8] and [r['step'] for r in logs] == list(range(1, 9))
        assert float(row['final_val_loss']) == evals[-1]['val_loss'] == summary['final_val_loss']
        assert float(row['final_train_loss']) == evals[-1]['train_loss']
        assert float(row['best_val_loss']) == min(e['val_loss'] for e in evals)
        assert int(row['tokens']) == 8 * 4 * 32 == logs[-1]['tokens'] and int(row['step']) == 8
        assert float(row['mu_norm']) == evals[-1]['mu_norm'] and float(row['isotropy']) == evals[-1]['isotropy']
        assert float(row['loss_at_init']) == pytest.approx(math.log(512))
        assert abs(evals[0]['val_loss'] - math.log(512)) < 0.05  # N(0, 0.02) init: ~uniform over 512 tokens
        at_init[lr, variant] = evals[0]['val_loss']
        if variant == 'z_loss':  # its term is logged and part of the loss
            assert all(r['loss'] == pytest.approx(r['ce'] + 1e-2 * r['z_loss'], rel=1e-6) for r in logs)
    for variant in ('baseline', 'z_loss'):
        tiny, usable = float(rows[LRS[0], variant]['final_val_loss']), float(rows[LRS[1], variant]['final_val_loss'])
        assert abs(at_init[LRS[0], variant] - tiny) < 0.01  # lr 1e-5: 8 steps barely move the loss
        assert at_init[LRS[1], variant] - usable > 0.3 and usable < tiny - 0.3  # lr 3e-2: a real drop
    assert rows[LRS[1], 'baseline']['final_val_loss'] != rows[LRS[1], 'z_loss']['final_val_loss']


@pytest.mark.slow
def test_printed_lr_sensitivity_is_the_papers_formula_on_the_csv(swept, capsys):
    rows = _rows(swept)
    sweep.main([str(swept.parent.parent / 'tiny_sweep.py'), f'--sweep_dir={swept}', '--results_only'])
    out = capsys.readouterr().out
    l0 = math.log(512)
    for variant in ('baseline', 'z_loss'):
        losses = [float(rows[lr, variant]['final_val_loss']) for lr in LRS]
        lrs = sum(min(x, l0) - min(losses) for x in losses) / (len(losses) - 1)
        assert f"variant={variant}: LRS {lrs:.3f}" in out, out
        assert lrs > 0.3  # the two rates really differ


@pytest.mark.slow
def test_rerun_skips_finished_runs(swept, capsys, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in swept.glob('*/metrics.jsonl')}
    monkeypatch.chdir(swept.parent.parent)
    sweep.main(['tiny_sweep.py'])
    assert capsys.readouterr().out.count('already, skipped') == 4
    assert {p: p.stat().st_mtime_ns for p in swept.glob('*/metrics.jsonl')} == before


@pytest.mark.slow
def test_oec_mechanism_ordering_on_a_smaller_case(tiny_dataset, tmp_path, monkeypatch, capsys):
    """config/oec_mechanism.py, smaller (2 x 32 on the tiny dataset, 60 start steps + 30 per arm, no mu-loss arm):
    after the injected mean logit of 1000, in bf16 the baseline is worst, mu-centering equals the unshifted
    control, z-loss pulls mu.h_bar back and recovers from its spike; in fp32 the gauge-exact arms do not separate."""
    from conftest import ROOT
    (tmp_path / 'mech.py').write_text(
        "exec(open('config/oec_mechanism.py').read())\n"
        f"data_root = {str(tiny_dataset.parent)!r}\ndataset = {tiny_dataset.name!r}\n"
        "n_embd = 32\nblock_size = 32\nmax_iters = 90\nlr_decay_iters = 90\nwarmup_iters = 5\n"
        "eval_interval = 30\neval_iters = 4\nlog_interval = 10\n"
        "start_run = dict(max_iters=60, gauge_shift=0.0)\n"
        "variants = {k: v for k, v in variants.items() if k != 'mu_loss'}\n")
    monkeypatch.chdir(ROOT)  # the config execs config/oec_mechanism.py by its relative path
    sweep_dir = tmp_path / 'sw'
    sweep.main([str(tmp_path / 'mech.py'), f'--sweep_dir={sweep_dir}'])
    out = capsys.readouterr().out
    with open(sweep_dir / 'results.csv') as f:
        loss = {(r['dtype'], r['variant']): float(r['final_val_loss']) for r in csv.DictReader(f)}
    evals = {(d, v): [r for r in read_jsonl(sweep_dir / f'dtype={d},variant={v}' / 'metrics.jsonl') if 'val_loss' in r]
             for d, v in loss}
    bf, fp = 'bfloat16', 'float32'
    start = evals[bf, 'control'][-2]  # the start run's last eval (bf16), copied into every arm; then step 90
    assert start['step'] == 60 and abs(start['fhs_dot_prod']) < 20
    shifted = {d: evals[d, 'baseline'][-2] for d in (bf, fp)}  # a shifted arm evaluates right after the shift
    assert all(s['step'] == 60 and 700 < s['fhs_dot_prod'] < 1300 for s in shifted.values())
    assert shifted[fp]['val_loss'] == pytest.approx(start['val_loss'], abs=0.03)  # a gauge change (start: bf16 eval)
    assert shifted[bf]['val_loss'] > start['val_loss'] + 0.3  # bf16 rounds logits near 1000 in steps of 4-8
    # measured (2 x 32, 30 steps after the shift): control 4.137, baseline 5.087, mu-centering 4.138, z-loss 5.219
    assert loss[bf, 'baseline'] > max(loss[bf, 'control'], loss[bf, 'mu_centering']) + 0.5, loss  # stays hurt...
    assert loss[bf, 'mu_centering'] == pytest.approx(loss[bf, 'control'], abs=0.03), loss  # ...removed at once
    z = evals[bf, 'z_loss']  # its spike: the (log Z)^2 ~ 1e6 term's own gradient; 30 steps do not undo it all
    # pulled back, and recovering: its val loss falls after the spike (5.343 -> 5.263 on this 2-core machine; the
    # size of the fall depends on the CPU's float rounding, its sign does not)
    assert z[-1]['fhs_dot_prod'] < 100 and z[-1]['val_loss'] < z[-2]['val_loss'], z
    assert abs(evals[bf, 'mu_centering'][-1]['fhs_dot_prod']) < 1
    for v in ('baseline', 'mu_centering'):  # fp32: nothing but rounding separates them from the control
        assert loss[fp, v] == pytest.approx(loss[fp, 'control'], abs=0.02), (v, loss)
    assert 'fhs_dot_prod at step' in out and (sweep_dir / 'evals.png').is_file()
