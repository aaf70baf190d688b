"""train.py end to end on tiny models (2 layers, 32 wide, block 32) and real text (bytes of the shared English
text, nanoGPT char-level layout): exact resume, run folder, per-language eval, faults, bad config, HF init,
fine-tuning. Single-process runs execute train.py in this process (runpy); faults use real subprocesses."""
import json
import math
import os
import pickle
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import losses

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_iters=2, max_iters=8,
            eval_interval=4, log_interval=1, warmup_iters=2, lr_decay_iters=8, learning_rate=1e-2,
            min_lr=1e-4, sample_tokens=0, device='cpu', dtype='float32')


def _write_bytes_dataset(folder: Path, text: bytes, langs: dict[str, bytes] | None = None) -> Path:
    """Byte-level tokens (vocab 256) in nanoGPT's layout; with langs, our meta.json + val_<lang>.bin too."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.frombuffer(text, dtype=np.uint8).astype(np.uint16)
    n = len(ids) * 9 // 10
    ids[:n].tofile(folder / 'train.bin')
    ids[n:].tofile(folder / 'val.bin')
    if langs is None:
        with open(folder / 'meta.pkl', 'wb') as f:
            pickle.dump({'vocab_size': 256}, f)
        return folder
    for lang, val_text in langs.items():
        np.frombuffer(val_text, dtype=np.uint8).astype(np.uint16).tofile(folder / f'val_{lang}.bin')
    # bytes = tokens here, so bits per byte = loss / ln 2 exactly; halve the bytes to see the ratio used
    meta = dict(vocab_size=256, dtype='uint16', tokenizer=None, val_splits=[f'val_{lang}' for lang in langs],
                languages={lang: dict(val_tokens=len(t), val_bytes=2 * len(t)) for lang, t in langs.items()})
    (folder / 'meta.json').write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope='module')
def data_root(tmp_path_factory, shared_dir) -> Path:
    root = tmp_path_factory.mktemp('data')
    _write_bytes_dataset(root / 'en', (shared_dir / 'data' / 'text' / 'en.txt').read_bytes()[:200_000])
    return root


def run_train(out_dir: Path, data_root: Path, dataset: str = 'en', **overrides) -> list[dict]:
    """Run train.py in this process with TINY + overrides; return its metrics.jsonl records."""
    args = dict(TINY, out_dir=str(out_dir), data_root=str(data_root), dataset=dataset) | overrides
    argv = ['train.py'] + [f'--{k}={v}' for k, v in args.items()]
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    old_argv, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    finally:
        sys.argv = old_argv
        for s, h in handlers.items():
            signal.signal(s, h)
    return _metrics(out_dir)


def _metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / 'metrics.jsonl').read_text().splitlines()]


def _losses(records: list[dict]) -> dict[int, float]:
    return {r['step']: r['loss'] for r in records if 'loss' in r}


def _fails(tmp_path, data_root, match: str, env: dict | None = None, **overrides) -> None:
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with pytest.raises(SystemExit, match=match):
            run_train(tmp_path / 'bad', data_root, **overrides)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert not (tmp_path / 'bad' / 'metrics.jsonl').exists()  # stopped before any work


def _subprocess(out_dir: Path, data_root: Path, **overrides) -> subprocess.Popen:
    args = dict(TINY, out_dir=str(out_dir), data_root=str(data_root), dataset='en') | overrides
    cmd = [sys.executable, str(ROOT / 'train.py')] + [f'--{k}={v}' for k, v in args.items()]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited ({proc.returncode}) before {path}:\n{proc.stdout.read()}")
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


# -----------------------------------------------------------------------------

@pytest.mark.slow
def test_resume_is_bitwise_exact(tmp_path, data_root):
    """Stopped at step 4 and resumed = uninterrupted, bitwise, at every later step: weights, optimizer
    (Coupled Adam), LR schedule, data order, dropout RNG, and the mu-centering/z-/mu-loss paths restored."""
    flags = dict(dropout=0.1, optimizer='coupled_adam', z_loss=1e-4, mu_loss=1e-4, mu_centering=True,
                 tie_embeddings=False, keep_last_k=1)
    full = _losses(run_train(tmp_path / 'full', data_root, **flags))
    run_train(tmp_path / 'cut', data_root, **flags, max_iters=4)
    ckpt = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)  # plain tensors and Python values only
    assert ckpt['step'] == 4 and ckpt['loader']['slices'] == 4
    assert ckpt['config']['optimizer'] == 'coupled_adam'
    assert {'model', 'optimizer', 'rng', 'model_args', 'schedule'} <= set(ckpt)
    resumed = _losses(run_train(tmp_path / 'cut', data_root, **flags, init_from='resume'))
    assert sorted(full) == sorted(resumed) == list(range(1, 9))
    assert all(resumed[s] == full[s] for s in range(1, 9)), (resumed, full)
    assert sorted(p.name for p in (tmp_path / 'cut').glob('ckpt*.pt')) == ['ckpt.pt', 'ckpt_0000008.pt']


def test_run_folder_metrics_and_summary(tmp_path, data_root):
    recs = run_train(tmp_path / 'run', data_root, z_loss=1e-2, mu_loss=1e-2, mu_centering=True, max_iters=4)
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['world_size'] == 1 and cfg['torch_version'] == torch.__version__ and 'git_commit' in cfg
    assert cfg['tokens_per_step'] == 4 * 32 and cfg['model_args']['n_layer'] == 2
    logs = [r for r in recs if 'loss' in r]
    assert [r['step'] for r in logs] == [1, 2, 3, 4] and [r['tokens'] for r in logs] == [128, 256, 384, 512]
    for r in logs:  # the logged loss is the sum of its weighted terms
        assert r['loss'] == pytest.approx(r['ce'] + 1e-2 * r['z_loss'] + 1e-2 * r['mu_loss'], rel=1e-6)
        assert r['tokens_per_sec'] > 0 and r['mfu'] > 0 and r['grad_norm'] > 0
    evals = [r for r in recs if 'val_loss' in r]
    assert [r['step'] for r in evals] == [0, 4]
    assert evals[1]['mu_norm'] < 1e-6 < evals[0]['mu_norm']  # mu-centering after every step (OEC §1.4)
    assert {'logits_mean_mean', 'mean_logsqZ', 'isotropy', 'smin_smax', 'corr_emu_logfreq'} <= set(evals[1])
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['finished'] and not summary['diverged']
    assert (summary['step'], summary['tokens']) == (4, 512)
    assert summary['final_val_loss'] == evals[1]['val_loss'] <= evals[0]['val_loss']
    assert summary['best_val_loss'] == min(e['val_loss'] for e in evals)


def test_per_language_val_loss_and_bits_per_byte(tmp_path, shared_dir):
    text = {lang: (shared_dir / 'data' / 'text' / f'{lang}.txt').read_bytes()[:20_000]
            for lang in ('sv', 'da')}
    _write_bytes_dataset(tmp_path / 'data' / 'multi', text['sv'] + text['da'], langs=text)
    recs = run_train(tmp_path / 'run', tmp_path / 'data', dataset='multi', max_iters=2, eval_interval=2)
    ev = recs[-1]
    for lang in ('sv', 'da'):  # tokens/bytes = 1/2 in this meta.json
        assert ev[f'val_bpb/{lang}'] == pytest.approx(ev[f'val_loss/{lang}'] / math.log(2) / 2)
    assert ev['val_loss/sv'] != ev['val_loss/da']


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_root):
    msg = r"non-finite loss inf .* at step 3;.*last good checkpoint: .*ckpt_0000002"
    with pytest.raises(SystemExit, match=msg):
        run_train(tmp_path / 'run', data_root, eval_interval=2, inject_nonfinite_at_step=3)
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['diverged'] and not summary['finished'] and summary['last_train_loss'] is None
    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] == 2 and all(torch.isfinite(v).all() for v in ckpt['model'].values())


def test_skip_nonfinite_counts_and_continues(tmp_path, data_root):
    recs = run_train(tmp_path / 'run', data_root, max_iters=4, skip_nonfinite=True,
                     inject_nonfinite_at_step=2)
    logs = {r['step']: r for r in recs if 'loss' in r}
    assert logs[2]['loss'] is None and logs[2]['nonfinite_skipped'] == 1 and math.isfinite(logs[4]['loss'])
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['finished'] and summary['nonfinite_skipped'] == 1
    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values())


def test_bad_config_fails_before_any_work(tmp_path, data_root):
    _fails(tmp_path, data_root, r"parallelism='ddp' needs torchrun's environment", parallelism='ddp')
    torchrun_env = dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0')
    _fails(tmp_path, data_root, r"gradient_accumulation_steps=3 .* divisible by the world size 2",
           env=torchrun_env, parallelism='ddp', gradient_accumulation_steps=3)
    _fails(tmp_path, data_root, r"torchrun started 2 processes but parallelism='none'", env=torchrun_env)
    _fails(tmp_path, data_root, r"z_loss=-0.1 is negative", z_loss=-0.1)
    _fails(tmp_path, data_root, r"optimizer='sgd' is not one of", optimizer='sgd')
    _fails(tmp_path, data_root, r"dtype='float16' .* use bfloat16", dtype='float16')
    _fails(tmp_path, data_root, r"unknown norm='batchnorm'", norm='batchnorm')
    _fails(tmp_path, data_root, r"n_embd=30 is not divisible by n_head=4", n_embd=30, n_head=4)
    _fails(tmp_path, data_root, r"model_preset='gpt5' is unknown", model_preset='gpt5')
    _fails(tmp_path, data_root, r"ckpt.pt does not exist", init_from='resume')
    _fails(tmp_path, data_root, r"1 x 9999 = 9999 are needed per step", batch_size=9999)
    _fails(tmp_path, data_root, r"cannot prepare dataset 'nope'.*python data.py prepare", dataset='nope')
    _fails(tmp_path, data_root, r"wsd schedule", schedule='wsd', wsd_decay_frac=0.0)


def test_resume_with_another_model_shape_fails(tmp_path, data_root):
    run_train(tmp_path / 'run', data_root, max_iters=1, eval_interval=1)
    with pytest.raises(SystemExit, match=r"n_layer: 2 there vs 3 set.*Drop --n_layer"):
        run_train(tmp_path / 'run', data_root, init_from='resume', n_layer=3)


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_exits_0_then_resumes(tmp_path, data_root):
    out = tmp_path / 'run'
    proc = _subprocess(out, data_root, max_iters=100000, eval_interval=100000, lr_decay_iters=100000)
    _wait_for(out / 'metrics.jsonl', proc)
    while len(_metrics(out)) < 3:  # the step-0 eval plus two logged steps
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stdout.read()
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] >= 2 and _metrics(out)[-1]['step'] == ckpt['step']
    summary = json.loads((out / 'summary.json').read_text())
    assert not summary['finished'] and not summary['diverged'] and summary['step'] == ckpt['step']
    recs = run_train(out, data_root, init_from='resume', max_iters=ckpt['step'] + 2, lr_decay_iters=100000,
                     eval_interval=100000)
    assert [r['step'] for r in recs if 'loss' in r][-2:] == [ckpt['step'] + 1, ckpt['step'] + 2]


@pytest.mark.slow
def test_kill_9_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, data_root):
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=2, eval_interval=2)
    proc = _subprocess(out, data_root, init_from='resume', max_iters=4, eval_interval=2, debug_ckpt_sleep=60)
    _wait_for(out / 'ckpt_0000004.pt.tmp', proc)  # written and fsynced, not yet renamed
    proc.kill()
    proc.wait()
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] == 2
    recs = run_train(out, data_root, init_from='resume', max_iters=4, eval_interval=2)
    assert recs[-1]['step'] == 4 and torch.load(out / 'ckpt.pt', weights_only=True)['step'] == 4
    assert not list(out.glob('*.tmp'))  # the killed write's temp file is cleaned up


@pytest.mark.slow
def test_cpu_variants_of_gpu_features(tmp_path, data_root):
    """Activation checkpointing recomputes the same numbers; bf16 autocast and meta-device init train
    sensibly (the initial loss ~ ln 256 as for a regular init)."""
    base = _losses(run_train(tmp_path / 'base', data_root, max_iters=3))
    ac = _losses(run_train(tmp_path / 'ac', data_root, max_iters=3, activation_checkpointing=True))
    assert ac == base
    bf16 = _losses(run_train(tmp_path / 'bf16', data_root, max_iters=3, dtype='bfloat16'))
    assert all(abs(bf16[s] - base[s]) < 0.05 for s in base)
    meta = run_train(tmp_path / 'meta', data_root, max_iters=3, init_device='meta')
    assert abs(meta[0]['val_loss'] - math.log(256)) < 0.2
    assert all(math.isfinite(v) for v in _losses(meta).values())


def test_init_from_hf_gpt2_folder(tmp_path, data_root):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(tmp_path / 'hf')
    recs = run_train(tmp_path / 'run', data_root, init_from=f"gpt2-hf:{tmp_path / 'hf'}", max_iters=1,
                     eval_interval=1)
    gen, val = torch.Generator().manual_seed(1337 + 7), data.load_tokens(data_root / 'en', 'val')
    with torch.no_grad():  # the step-0 eval = HF's own loss on the same fixed validation windows
        ref = np.mean([losses.cross_entropy(hf(x).logits, y).item()
                       for x, y in (data.get_batch(val, 4, 32, gen) for _ in range(2))])
    assert recs[0]['val_loss'] == pytest.approx(ref, abs=1e-4)
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['model_args']['mlp'] == 'gelu_tanh'


@pytest.mark.slow
def test_finetune_on_chat_learns_the_answers(tmp_path, shared_dir):
    """init_from='finetune': the pretraining checkpoint's weights (same val loss), a fresh optimizer and step
    count, chat batches with loss on the assistant tokens only; the loss on made-up Q/A pairs falls to ~0."""
    src = tmp_path / 'en.txt'
    src.write_text('\n'.join((shared_dir / 'data' / 'text' / 'en.txt').read_text().splitlines()[:3000]))
    data.prepare_dataset('sp', data_root=tmp_path / 'data', input=str(src), vocab_size=400, num_proc=1)
    tiny = dict(dataset='sp', n_embd=64, block_size=64)
    pre = run_train(tmp_path / 'pre', tmp_path / 'data', **tiny, max_iters=2, eval_interval=2)
    qa = [('Name the first colour', 'red'), ('Name the second colour', 'green'),
          ('Say the magic word', 'please'), ('Which way is north', 'up')]
    chat = tmp_path / 'chat.jsonl'
    chat.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': q},
                                                     {'role': 'assistant', 'content': a}]}) + '\n'
                            for q, a in qa))
    ft = run_train(tmp_path / 'ft', tmp_path / 'data', **tiny, init_from='finetune',
                   finetune_from=str(tmp_path / 'pre'), finetune_data=str(chat), max_iters=80,
                   eval_interval=80, log_interval=10, learning_rate=1e-2, min_lr=1e-3, warmup_iters=5,
                   lr_decay_iters=80, weight_decay=0.0)
    assert ft[0]['step'] == 0 and ft[0]['pretrain_val_loss'] == pytest.approx(pre[-1]['val_loss'], abs=1e-5)
    assert ft[0]['val_loss'] > 2.0 and ft[-1]['val_loss'] < 0.1, (ft[0], ft[-1])
