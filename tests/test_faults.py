"""The README's fault promises, on real train.py processes and the shared tiny dataset:
- SIGINT (Ctrl-C) like SIGTERM: the step finishes, a checkpoint is saved, exit status 0, resume continues;
- a signal that reaches only one of two ranks stops both at the same step (the all-reduced stop flag);
- non-finite weights are never checkpointed: the previous ckpt.pt stays, and the run stops;
- an infinite gradient norm with a finite loss stops the run before the optimizer step (exit 1, diverged)."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY_TRAIN, read_jsonl, train_py

LONG = dict(max_iters=100_000, eval_interval=100_000, lr_decay_iters=100_000, log_interval=1)


def _popen(out: Path, data: Path, env: dict | None = None, **overrides) -> subprocess.Popen:
    args = dict(TINY_TRAIN, out_dir=str(out), data_root=str(data.parent), dataset=data.name) | overrides
    cmd = [sys.executable, str(ROOT / 'train.py')] + [f'--{k}={v}' for k, v in args.items()]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))


def _wait_for_steps(out: Path, procs: list[subprocess.Popen], n: int, timeout: float = 180) -> None:
    t0 = time.time()
    while not ((out / 'metrics.jsonl').exists()
               and sum('loss' in r for r in read_jsonl(out / 'metrics.jsonl')) >= n):
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"train.py exited ({p.returncode}) early:\n{p.stdout.read()[-3000:]}")
        assert time.time() - t0 < timeout, 'no training steps logged'
        time.sleep(0.05)


def _ckpt(out: Path) -> dict:
    return torch.load(out / 'ckpt.pt', weights_only=True)


@pytest.mark.slow
def test_sigint_saves_checkpoint_exits_0_and_resumes(tiny_dataset, tmp_path):
    out = tmp_path / 'run'
    proc = _popen(out, tiny_dataset, **LONG)
    _wait_for_steps(out, [proc], 2)
    proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, log[-3000:]
    assert 'stopped by SIGINT' in log and '--init_from=resume' in log
    ckpt = _ckpt(out)
    summary = json.loads((out / 'summary.json').read_text())
    assert not summary['finished'] and not summary['diverged'] and summary['step'] == ckpt['step'] >= 2
    assert [r['step'] for r in read_jsonl(out / 'metrics.jsonl') if 'loss' in r][-1] == ckpt['step']
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, init_from='resume', **dict(
        LONG, max_iters=ckpt['step'] + 2))
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [x['step'] for x in read_jsonl(out / 'metrics.jsonl') if 'loss' in x]
    assert steps == list(range(1, ckpt['step'] + 3))  # no step lost or repeated


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(tiny_dataset, tmp_path):
    """Two gloo ranks started by hand (torchrun would forward the signal to both); SIGTERM reaches rank 1
    only. Both must finish the step, join the checkpoint and exit 0 at the same step."""
    out = tmp_path / 'run'
    env = dict(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()), WORLD_SIZE='2')
    procs = [_popen(out, tiny_dataset, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), parallelism='ddp',
                    gradient_accumulation_steps=2, **LONG) for r in (0, 1)]
    try:
        _wait_for_steps(out, procs, 3)
        procs[1].send_signal(signal.SIGTERM)
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert 'stopped by a signal on another rank' in logs[0]  # rank 0 never got the signal itself
    ckpt = _ckpt(out)
    summary = json.loads((out / 'summary.json').read_text())
    assert ckpt['world_size'] == 2 and summary['step'] == ckpt['step'] >= 3 and not summary['finished']
    assert [r['step'] for r in read_jsonl(out / 'metrics.jsonl') if 'loss' in r][-1] == ckpt['step']


@pytest.fixture
def good_run(tiny_dataset, tmp_path) -> Path:
    """Two good steps with a checkpoint at step 2."""
    out = tmp_path / 'run'
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, max_iters=2, eval_interval=2)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_nonfinite_weights_are_never_checkpointed(tiny_dataset, tmp_path):
    """weight_decay=1e30 at lr 1e10: AdamW's decoupled decay multiplies the weights by 1 - lr * wd, which
    overflows float32 to inf. Step 1's loss (computed before the update) is finite, its weights are not. The
    eval checkpoint at step 1 must be refused: no checkpoint file at all, one message, no traceback.
    (From scratch: on resume the optimizer's weight_decay comes from the checkpoint, not the config.)"""
    out = tmp_path / 'run'
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, max_iters=2, eval_interval=1, warmup_iters=0,
                 learning_rate=1e10, min_lr=1e9, weight_decay=1e30)
    assert r.returncode != 0
    assert 'refusing to checkpoint non-finite weights' in r.stderr, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr  # one message, not a stack trace
    assert not list(out.glob('ckpt*')), list(out.iterdir())
    logged = [x for x in read_jsonl(out / 'metrics.jsonl') if 'loss' in x]
    assert logged[-1]['step'] == 1 and math.isfinite(logged[-1]['loss'])  # the case under test: finite loss


@pytest.mark.slow
def test_infinite_grad_norm_with_finite_loss_stops_before_the_step(tiny_dataset, good_run):
    """mu_loss = 1e38: the loss (ce + 1e38 * ||mu||^2 ~ 1e33) is finite, the squared gradient entries overflow,
    so the gradient norm is inf. The run must stop before the optimizer step (exit 1, diverged)."""
    r = train_py(good_run, tiny_dataset.parent, tiny_dataset.name, init_from='resume', max_iters=4,
                 eval_interval=1, mu_loss=1e38)
    assert r.returncode == 1, r.stderr[-3000:]
    assert 'grad norm inf' in r.stderr and 'at step 3' in r.stderr and 'ckpt' in r.stderr, r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    summary = json.loads((good_run / 'summary.json').read_text())
    assert summary['diverged'] and not summary['finished'] and summary['step'] == 2
    assert _ckpt(good_run)['step'] == 2
    # the loss of that step was finite: printed in the message
    loss = float(r.stderr.split('non-finite loss ')[1].split(' ')[0])
    assert math.isfinite(loss) and loss > 1e30


@pytest.mark.slow
def test_one_run_per_out_dir_and_the_lock_goes_with_the_run(tiny_dataset, tmp_path):
    """A second train.py on a running run's out_dir stops before writing anything, naming the first one's pid and
    start time (as a new run with --overwrite=True and as a resume); the lock file goes when the first run ends by
    SIGTERM; a lock file left by a killed run (its flock is gone) is taken over with one message."""
    out = tmp_path / 'run'
    proc = _popen(out, tiny_dataset, **dict(LONG, eval_interval=2))
    try:
        _wait_for_steps(out, [proc], 3)  # a checkpoint at step 2, so that a resume gets as far as the lock
        for extra in (dict(overwrite=True), dict(init_from='resume')):
            r = train_py(out, tiny_dataset.parent, tiny_dataset.name, **extra)
            assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
            assert f"is in use by another run: pid {proc.pid} on " in r.stderr and ', started 20' in r.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0 and 'stopped by SIGTERM' in log, log[-3000:]
    steps = [x['step'] for x in read_jsonl(out / 'metrics.jsonl') if 'loss' in x]
    assert steps == list(range(1, steps[-1] + 1))  # one writer: no step twice
    assert not (out / '.lock').exists()
    (out / '.lock').write_text(json.dumps(dict(pid=proc.pid, host='h', started='2026-01-01 00:00:00')))  # kill -9
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, init_from='resume', **dict(
        LONG, max_iters=steps[-1] + 1))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"taking over the stale lock of pid {proc.pid} on h, started 2026-01-01" in r.stderr
    assert not (out / '.lock').exists()
    early = tmp_path / 'early'  # SIGTERM as soon as the lock is taken (setup, or the first steps): lock released
    proc = _popen(early, tiny_dataset, **LONG)
    t0 = time.time()
    while not (early / '.lock').exists():
        assert proc.poll() is None and time.time() - t0 < 120, proc.stdout.read()[-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode in (0, 1) and 'Traceback' not in log and 'stopped by SIGTERM' in log, log[-3000:]
    assert not (early / '.lock').exists()
