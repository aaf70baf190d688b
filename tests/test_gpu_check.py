"""bench/gpu_check.py on CPU (--device=cpu: tiny shapes, gloo, no compile): its in-process checks, the results
files, budget SKIPs and failures; the whole check end to end (slow). An import or API error in the GPU check
fails here, not on a GPU machine."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location('gpu_check', ROOT / 'bench' / 'gpu_check.py')
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)


def _ctx(tmp_path, **over):
    return gpu_check.new_context(dict(gpu_check.DEFAULTS, device='cpu', out=str(tmp_path / 'out')) | over,
                                 str(tmp_path / 'work'))


def _results(ctx):
    out = Path(ctx['out'])
    return (out / 'results.txt').read_text().splitlines(), [json.loads(ln) for ln in
                                                             (out / 'figures.jsonl').read_text().splitlines()]


def test_in_process_checks_pass_on_cpu_and_are_recorded_at_once(tmp_path):
    """preflight (imports the peak from mfu.py: the import that stopped the old script), data and syncs run on
    CPU; each appends its line and its JSON figures as it finishes."""
    ctx = _ctx(tmp_path)
    for i, name in enumerate(('preflight', 'data', 'syncs')):
        fn = dict((n, f) for n, f, _ in gpu_check.PLAN)[name]
        assert gpu_check.run_check(ctx, name, fn, 60, 100) == 'PASS'
        lines, figures = _results(ctx)
        assert len(lines) == len(figures) == i + 1 and lines[-1].startswith(f'RESULT {name}')
        assert figures[-1]['check'] == name and figures[-1]['status'] == 'PASS'
    assert figures[0]['peak_flops'] is None and 'CPU' in figures[0]['peak_source']  # mfu.py: no honest CPU peak
    assert (Path(ctx['work']) / 'data' / 'gpt2' / 'train.bin').stat().st_size > 0


def test_syncs_check_fails_on_a_host_read_in_the_step(tmp_path, monkeypatch):
    """The CPU stand-in of set_sync_debug_mode fails the check when the step reads a value back (here: the
    guarded step's flag, as before CoupledAdam skipped on the device)."""
    def reading_step(opt, ok):
        if bool(ok):
            opt.step()
        opt.zero_grad(set_to_none=True)
    monkeypatch.setattr(gpu_check.optim, 'guarded_step', reading_step)
    status, message, _ = gpu_check.check_syncs(_ctx(tmp_path), 60)
    assert status == 'FAIL' and 'Tensor.__bool__' in message


def test_budget_skip_is_skip_and_a_broken_check_is_fail(tmp_path):
    """A check that no longer fits the budget is SKIP with the reason (never FAIL); an exception inside a check is
    FAIL with its message, recorded like any other result."""
    ctx = _ctx(tmp_path)
    assert gpu_check.run_check(ctx, 'mfu_356m', gpu_check.check_mfu_356m, 170, 5) == 'SKIP'

    def broken(ctx, limit):
        raise ImportError("cannot import name 'peak_flops' from 'model'")
    assert gpu_check.run_check(ctx, 'preflight', broken, 60, 100) == 'FAIL'
    lines, figures = _results(ctx)
    assert 'SKIP' in lines[0] and 'budget' in lines[0] and figures[0]['status'] == 'SKIP'
    assert "FAIL ImportError: cannot import name 'peak_flops'" in lines[1]


def test_a_failed_preflight_skips_every_later_check_with_the_reason(tmp_path, monkeypatch):
    """main(): when preflight fails (here: no CUDA), every later check is recorded SKIP naming it; exit 1."""
    monkeypatch.setattr(gpu_check.torch.cuda, 'is_available', lambda: False)
    assert gpu_check.main(['--device=cuda', f'--out={tmp_path / "out"}']) == 1
    lines = (tmp_path / 'out' / 'results.txt').read_text().splitlines()
    assert 'FAIL' in lines[0] and 'torch.cuda.is_available() is False' in lines[0]
    assert len(lines) == len(gpu_check.PLAN)
    assert all(' SKIP preflight failed' in ln for ln in lines[1:])


def test_failed_run_is_fail_with_its_error_line_in_log_txt(tmp_path):
    """A train.py run that stops (here: a bad key) makes the check FAIL with the run's error line; its log's
    tail goes to log.txt (the third and last file under the output folder)."""
    ctx = _ctx(tmp_path)
    rcs = gpu_check.run_all(ctx, {'bad': (dict(device='cpu', batch_size=0), 0)}, 120)
    assert rcs == {'bad': 1}
    assert 'batch_size' in gpu_check.failed_runs(ctx, rcs)
    assert 'batch_size=0 is outside its range' in (Path(ctx['out']) / 'log.txt').read_text()


def test_main_refuses_bad_keys_before_any_work(tmp_path):
    for args, text in ((['--device=tpu'], "device='tpu'"), (['--device=cpu', '--only=mfu'], 'unknown check')):
        r = subprocess.run([sys.executable, str(ROOT / 'bench' / 'gpu_check.py'), f'--out={tmp_path / "o"}', *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and text in r.stderr and 'Traceback' not in r.stderr
    assert not (tmp_path / 'o' / 'results.txt').exists()


@pytest.mark.slow
def test_whole_check_runs_on_cpu(tmp_path):
    """bash bench/gpu.sh --device=cpu: every check in order on tiny shapes (train.py, torchrun on 1 gloo rank,
    DCP resume, bench_train.py), each PASS or INFO; at most 3 files under the output folder."""
    out = tmp_path / 'out'
    r = subprocess.run(['bash', str(ROOT / 'bench' / 'gpu.sh'), '--device=cpu', f'--out={out}', '--budget_s=1500'],
                       capture_output=True, text=True, timeout=1500,
                       env=dict(os.environ, OMP_NUM_THREADS='1', PY=sys.executable))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    figures = [json.loads(ln) for ln in (out / 'figures.jsonl').read_text().splitlines()]
    assert [f['check'] for f in figures] == [n for n, _, _ in gpu_check.PLAN]
    assert all(f['status'] in ('PASS', 'INFO') for f in figures), (out / 'results.txt').read_text()
    assert sorted(p.name for p in out.iterdir()) == ['figures.jsonl', 'results.txt']  # no failure: no log.txt
    by = {f['check']: f for f in figures}
    assert by['parity']['max_rel_diff_feat'] == 0.0 and by['dist_1rank']['max_rel_diff_dcp_resume'] < 1e-4
    assert by['mfu_124m']['tokens_per_sec'] > 0 and torch.isfinite(torch.tensor(by['tf32']['ratio']))
