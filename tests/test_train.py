"""train.py end to end on tiny models (2 layers, 32 wide, block 32) and real text (bytes of the shared English
text, nanoGPT char-level layout): exact resume, run folder, per-language eval, faults, bad config, HF init,
fine-tuning. Single-process runs execute train.py in this process (runpy); faults use real subprocesses."""
import errno
import json
import math
import os
import pickle
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint
import configurator
import data
import losses
from chat import ChatLoader, load_chat_jsonl
from loader import get_batch

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
def data_root(tmp_path_factory, corpora) -> Path:
    root = tmp_path_factory.mktemp('data')
    _write_bytes_dataset(root / 'en', (corpora / 'text' / 'en.txt').read_bytes()[:200_000])
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
        assert r['tokens_per_sec'] > 0 and 'mfu' not in r and r['grad_norm'] > 0  # no honest CPU peak
    evals = [r for r in recs if 'val_loss' in r]
    assert [r['step'] for r in evals] == [0, 4]
    assert evals[1]['mu_norm'] < 1e-6 < evals[0]['mu_norm']  # mu-centering after every step (OEC)
    assert {'logits_mean_mean', 'mean_logsqZ', 'isotropy', 'smin_smax', 'corr_emu_logfreq'} <= set(evals[1])
    summary = json.loads((tmp_path / 'run' / 'summary.json').read_text())
    assert summary['finished'] and not summary['diverged']
    assert (summary['step'], summary['tokens']) == (4, 512)
    assert summary['final_val_loss'] == evals[1]['val_loss'] <= evals[0]['val_loss']
    assert summary['best_val_loss'] == min(e['val_loss'] for e in evals)


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
                       for x, y in (get_batch(val, 4, 32, gen) for _ in range(2))])
    assert recs[0]['val_loss'] == pytest.approx(ref, abs=1e-4)
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['model_args']['mlp'] == 'gelu_tanh'


@pytest.mark.slow
def test_finetune_on_chat_learns_the_answers(tmp_path, corpora):
    """init_from='finetune': the pretraining checkpoint's weights (same val loss), a fresh optimizer and step
    count, chat batches with loss on the assistant tokens only; the loss on made-up Q/A pairs falls to ~0."""
    src = tmp_path / 'en.txt'
    src.write_text('\n'.join((corpora / 'text' / 'en.txt').read_text().splitlines()[:3000]))
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


# -----------------------------------------------------------------------------
# issue "runs that do exactly what they say, or stop": set keys win, every kind of run resumes exactly, run
# folders are never mixed, nothing is written before the checks, data files match their metadata

QA = [('Name the first colour', 'red'), ('Name the second colour of the flag, please', 'green and a bit of blue'),
      ('Say the magic word', 'please'), ('Which way is north on a map', 'up, at the top of the page'),
      ('Count to three', 'one two three'), ('What do cats say', 'meow'),
      ('Tell me something long about the sea and its waves', 'the sea is wide and its waves roll in all day'),
      ('Yes or no', 'no')]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def chat_setup(tmp_path_factory, tiny_dataset) -> dict:
    """A 2-step pretraining run on a data.py dataset (own BPE) and a chat file with conversations whose
    numbers of trained (assistant) tokens differ."""
    tmp = tmp_path_factory.mktemp('chat')
    pre = tmp / 'pre'
    run_train(pre, tiny_dataset.parent, dataset=tiny_dataset.name, n_embd=32, block_size=64, max_iters=2,
              eval_interval=2)
    chat = tmp / 'chat.jsonl'
    chat.write_text(''.join(json.dumps({'messages': [{'role': 'user', 'content': q},
                                                     {'role': 'assistant', 'content': a}]}) + '\n' for q, a in QA))
    return dict(pre=pre, chat=chat, data_root=tiny_dataset.parent, dataset=tiny_dataset.name)


def _finetune(out: Path, s: dict, **overrides) -> list[dict]:
    args = dict(init_from='finetune', finetune_from=str(s['pre']), finetune_data=str(s['chat']), n_embd=32,
                block_size=64, max_iters=3, eval_interval=3, learning_rate=1e-2, warmup_iters=1) | overrides
    return run_train(out, s['data_root'], dataset=s['dataset'], **args)


def _grad_norms(records: list[dict]) -> dict[int, float]:
    return {r['step']: r['grad_norm'] for r in records if 'grad_norm' in r}


def test_chat_loss_is_the_mean_over_the_global_batch_tokens(tmp_path, chat_setup):
    """batch_size=2 x 1 micro-step == batch_size=1 x 2 micro-steps, on loss and gradient norm; tokens count
    real tokens, not padding (the 2-conversation batch is padded to its longer conversation)."""
    a = _finetune(tmp_path / 'a', chat_setup, batch_size=2, gradient_accumulation_steps=1)
    b = _finetune(tmp_path / 'b', chat_setup, batch_size=1, gradient_accumulation_steps=2)
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == sorted(lb) == [1, 2, 3]
    for s in la:
        assert la[s] == pytest.approx(lb[s], rel=1e-5) and _grad_norms(a)[s] == pytest.approx(_grad_norms(b)[s],
                                                                                                rel=1e-5)
    tokens_a = [r['tokens'] for r in a if 'loss' in r]
    assert tokens_a == [r['tokens'] for r in b if 'loss' in r]
    chats = load_chat_jsonl(chat_setup['chat'])
    tok = data.dataset_tokenizer(chat_setup['data_root'] / chat_setup['dataset'])
    loader = ChatLoader(chats, tok, 2, 64)
    real, padded = [], []
    for _ in range(3):
        x, _y = loader.next_batch()
        real.append(loader.last_real_tokens)
        padded.append(x.numel())
    assert real != padded and tokens_a == list(np.cumsum(real))  # the batches hold padding; it is not counted


@pytest.mark.slow
def test_chat_finetune_resumes_bitwise(tmp_path, chat_setup):
    flags = dict(dropout=0.1, max_iters=6, eval_interval=3, lr_decay_iters=6, batch_size=2)
    full = _losses(_finetune(tmp_path / 'full', chat_setup, **flags))
    _finetune(tmp_path / 'cut', chat_setup, **(flags | dict(max_iters=3)))
    resumed = _losses(_finetune(tmp_path / 'cut', chat_setup, **(flags | dict(init_from='resume'))))
    assert sorted(resumed) == list(range(1, 7)) and all(resumed[s] == full[s] for s in range(1, 7)), (resumed, full)


@pytest.mark.slow
def test_gpt2_hf_run_resumes_bitwise(tmp_path, data_root):
    from hf import save_gpt2
    from model import GPT, GPTConfig
    torch.manual_seed(0)
    save_gpt2(GPT(GPTConfig(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32, bias=True,
                            mlp='gelu_tanh')), tmp_path / 'hf')
    flags = dict(init_from=f"gpt2-hf:{tmp_path / 'hf'}", dropout=0.1)
    full = _losses(run_train(tmp_path / 'full', data_root, **flags))
    run_train(tmp_path / 'cut', data_root, **flags, max_iters=4)
    resumed = _losses(run_train(tmp_path / 'cut', data_root, **(flags | dict(init_from='resume'))))
    assert sorted(resumed) == list(range(1, 9)) and all(resumed[s] == full[s] for s in range(1, 9))


def test_resume_of_a_finished_run(tmp_path, data_root):
    """The same max_iters: nothing to do, the run folder is unchanged. A larger max_iters continues."""
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=4, eval_interval=2, lr_decay_iters=8)
    before = _snapshot(out)
    with pytest.raises(SystemExit) as e:  # exit status 0: "nothing to do"
        run_train(out, data_root, max_iters=4, eval_interval=2, lr_decay_iters=8, init_from='resume')
    assert e.value.code == 0 and _snapshot(out) == before
    recs = run_train(out, data_root, max_iters=6, eval_interval=2, lr_decay_iters=8, init_from='resume')
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['finished'] and summary['step'] == 6 and [r['step'] for r in recs if 'loss' in r][-2:] == [5, 6]
    assert summary['final_val_loss'] == recs[-1]['val_loss']


def test_resume_takes_the_runs_own_config(tmp_path, data_root):
    """--init_from=resume alone continues the run as it was configured (not with the script defaults)."""
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=2, eval_interval=2, optimizer='coupled_adam', weight_decay=0.05)
    argv = ['train.py', f'--out_dir={out}', '--init_from=resume', '--max_iters=3', '--device=cpu',
            '--sample_tokens=0']
    old_argv, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    finally:
        sys.argv = old_argv
    cfg = json.loads((out / 'config.json').read_text())
    assert (cfg['optimizer'], cfg['weight_decay'], cfg['n_layer'], cfg['data_root']) == (
        'coupled_adam', 0.05, 2, str(data_root))
    assert torch.load(out / 'ckpt.pt', weights_only=True)['step'] == 3


def _resume(out: Path, **keys) -> list[dict]:
    """`python train.py --out_dir=OUT --init_from=resume --key=value ...` in this process: its metrics records."""
    argv = ['train.py', f'--out_dir={out}', '--init_from=resume', *(f'--{k}={v}' for k, v in keys.items())]
    old_argv, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    finally:
        sys.argv = old_argv
    return _metrics(out)


def test_resume_keeps_the_runs_precision_and_says_what_differs(tmp_path, data_root, capsys):
    """A bf16 run resumed without --dtype continues in bf16 (bitwise the uninterrupted bf16 run; the CPU default
    would be float32); a key that differs from the run's is printed once at start, with where it came from."""
    full = _losses(run_train(tmp_path / 'full', data_root, max_iters=3, dtype='bfloat16'))
    out = tmp_path / 'cut'
    run_train(out, data_root, max_iters=2, dtype='bfloat16')
    capsys.readouterr()
    resumed = _losses(_resume(out, max_iters=3))  # TINY sets dtype: only the keys a user would give
    said = capsys.readouterr().out
    assert json.loads((out / 'config.json').read_text())['dtype'] == 'bfloat16'
    assert resumed[3] == full[3]
    assert said.count('train.py: resume: max_iters: 2 -> 3 (set on the command line)') == 1
    assert 'dtype' not in said
    _resume(out, max_iters=4, dtype='float32')
    said = capsys.readouterr().out
    assert said.count('train.py: resume: dtype: bfloat16 -> float32 (set on the command line)') == 1
    assert json.loads((out / 'config.json').read_text())['dtype'] == 'float32'


@pytest.mark.parametrize('fmt', ['full', 'dcp'])
def test_optimizer_keys_set_on_resume_are_the_ones_that_train(tmp_path, data_root, fmt):
    """Loading an optimizer state also loads its param_groups' hyper-parameters; a weight_decay or beta set on the
    resume command line must still be the one the optimizer uses (unset ones stay the run's own), also when the
    state comes from sharded (DCP) checkpoint files."""
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=2, eval_interval=2, weight_decay=0.05, beta1=0.8, checkpoint_format=fmt)
    run_train(out, data_root, init_from='resume', max_iters=3, eval_interval=3, weight_decay=0.2, beta2=0.9,
              checkpoint_format=fmt)
    if fmt == 'dcp':  # the optimizer state is in the shards: read it through the single-file conversion
        checkpoint.convert(out, to=tmp_path / 'full')
        out = tmp_path / 'full'
    groups = torch.load(out / 'ckpt.pt', weights_only=True)['optimizer']['param_groups']
    assert sorted({g['weight_decay'] for g in groups}) == [0.0, 0.2]  # the no-decay group stays at 0
    assert {tuple(g['betas']) for g in groups} == {(0.8, 0.9)}


def test_new_run_never_overwrites_another_runs_folder(tmp_path, data_root):
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=2, eval_interval=1)
    before = _snapshot(out)
    with pytest.raises(SystemExit, match=r"holds another run's checkpoint: continue it with --init_from=resume, "
                                         r"choose a new --out_dir, or pass --overwrite=True"):
        run_train(out, data_root, max_iters=2)
    assert _snapshot(out) == before
    run_train(out, data_root, max_iters=1, eval_interval=1, overwrite=True, keep_last_k=5)
    assert sorted(p.name for p in out.glob('ckpt*')) == ['ckpt.pt', 'ckpt_0000001.pt']  # none of the old run's


PRESET_CASES = [
    ('oec-16m', dict(n_layer=4, n_embd=128, block_size=128, pos='learned', mlp='gelu', qk_norm=False,
                     tie_embeddings=True, init='normal', bias=False, norm='layernorm', n_head=4)),
    pytest.param('gpt2', dict(n_layer=4, n_head=4, n_embd=128, block_size=128, bias=False, mlp='gelu'),
                 marks=pytest.mark.slow),
    pytest.param('dyisru-125m', dict(n_layer=4, n_head=4, n_embd=128, block_size=128, norm='layernorm'),
                 marks=pytest.mark.slow),
]


def test_preset_cases_cover_every_model_key_a_preset_changes():
    from model import PRESETS
    defaults = configurator.script_defaults(str(ROOT / 'train.py'))
    changed = {k for p in PRESETS.values() for k, v in p.items() if k in defaults and v != defaults[k]}
    cases = [c.values if hasattr(c, 'values') else c for c in PRESET_CASES]
    covered = {k for preset, keys in cases for k in keys if PRESETS[preset][k] != keys[k]}
    assert changed == covered
    assert all(v == defaults[k] for _, keys in cases for k, v in keys.items())


@pytest.mark.parametrize('preset,keys', PRESET_CASES)
def test_a_model_key_set_to_its_default_beats_the_preset(tmp_path, data_root, preset, keys):
    """Every preset value that differs from train.py's default, set back to the default (in a config file,
    where `True is True` once hid it, and on the command line): the model is built with the value set."""
    cfg_file = tmp_path / 'c.py'
    cfg_file.write_text(f"model_preset = {preset!r}\n" + ''.join(f"{k} = {v!r}\n" for k, v in keys.items()))
    for how in ('file', 'cli'):
        argv = dict(model_preset=preset, **keys) if how == 'cli' else {}
        args = dict(TINY, **{k: v for k, v in keys.items() if k in TINY}, max_iters=1, eval_interval=1, eval_iters=1)
        out = tmp_path / how
        old_argv = sys.argv
        sys.argv = ['train.py'] + ([str(cfg_file)] if how == 'file' else []) + [
            f'--{k}={v}' for k, v in (args | argv | dict(out_dir=str(out), data_root=str(data_root),
                                                            dataset='en')).items()]
        try:
            runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
        finally:
            sys.argv = old_argv
        model_args = torch.load(out / 'ckpt.pt', weights_only=True)['model_args']
        assert {k: model_args[k] for k in keys} == keys, how
        assert json.loads((out / 'config.json').read_text())['tie_embeddings'] == model_args['tie_embeddings']


def test_unset_model_keys_come_from_the_preset(tmp_path, data_root):
    run_train(tmp_path / 'run', data_root, model_preset='oec-16m', n_layer=1, n_embd=32, n_head=2, block_size=32,
              max_iters=1, eval_interval=1)
    args = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)['model_args']
    assert (args['pos'], args['mlp'], args['tie_embeddings'], args['init'], args['n_layer']) == (
        'rope', 'swiglu', False, 'xavier', 1)


def test_resume_or_finetune_on_other_data_stops_before_anything_is_touched(tmp_path, tiny_dataset):
    root = tmp_path / 'data'
    shutil.copytree(tiny_dataset, root / 'tiny')
    out = tmp_path / 'run'
    run_train(out, root, dataset='tiny', max_iters=1, eval_interval=1)
    run_before, data_before = _snapshot(out), _snapshot(root)
    with pytest.raises(SystemExit, match=r"'resume' trains with the checkpoint's tokenizer.*drop --tokenizer"):
        run_train(out, root, dataset='tiny', init_from='resume', tokenizer='gpt2')
    assert _snapshot(root) == data_before and _snapshot(out) == run_before  # today: data/tiny re-prepared
    meta = data.load_meta(root / 'tiny')
    data.prepare_dataset('tiny', data_root=root, vocab_size=400, num_proc=1)  # the folder is rebuilt
    assert data.load_meta(root / 'tiny')['identity'] != meta['identity']
    with pytest.raises(SystemExit, match=r"the dataset folder .*tiny, the tokenizer of .*tiny changed since the "
                                         r"checkpoint"):
        run_train(out, root, dataset='tiny', init_from='resume', max_iters=2)
    assert _snapshot(out) == run_before
    chat = tmp_path / 'chat.jsonl'
    chat.write_text(json.dumps({'messages': [{'role': 'user', 'content': 'hi'},
                                             {'role': 'assistant', 'content': 'hello'}]}) + '\n')
    with pytest.raises(SystemExit, match=r"tokenizer of .*tiny changed since the checkpoint"):
        run_train(tmp_path / 'ft', root, dataset='tiny', init_from='finetune', finetune_from=str(out),
                  finetune_data=str(chat), batch_size=1)
    assert not (tmp_path / 'ft').exists()


def test_data_files_are_checked_against_meta(tmp_path, tiny_dataset, data_root):
    root = tmp_path / 'data'
    shutil.copytree(tiny_dataset, root / 'short')
    ids = np.fromfile(root / 'short' / 'val.bin', dtype=np.uint16)
    ids[:-1].tofile(root / 'short' / 'val.bin')  # one token short: a whole number of uint16, but not meta's count
    _fails(tmp_path, root, r"val.bin holds \d+ tokens but meta.json records \d+: .*delete .*short and prepare it "
                           r"again", dataset='short')
    shutil.copytree(data_root / 'en', root / 'odd')  # a nanoGPT folder (no meta.json): only the dtype is known
    with open(root / 'odd' / 'train.bin', 'ab') as f:
        f.write(b'\x00')
    _fails(tmp_path, root, r"train.bin: \d+ bytes is no whole number of uint16 tokens", dataset='odd')


def test_values_and_contradictions_are_checked_before_any_work(tmp_path, data_root):
    _fails(tmp_path, data_root, r"min_lr=0.1 is above learning_rate=0.01", min_lr=0.1, learning_rate=0.01)
    _fails(tmp_path, data_root, r"warmup_iters=-1 is negative", warmup_iters=-1)
    _fails(tmp_path, data_root, r"learning_rate=1e\+39 is not a finite float32 value", learning_rate=1e39)
    _fails(tmp_path, data_root, r"max_iters=-1 is negative", max_iters=-1)
    _fails(tmp_path, data_root, r"beta1=1.0 must be in \[0, 1\)", beta1=1.0)
    _fails(tmp_path, data_root, r"beta2=-0.5 must be in \[0, 1\)", beta2=-0.5)
    _fails(tmp_path, data_root, r"vocab_multiple=0 must be .*>= 1", vocab_multiple=0)
    _fails(tmp_path, data_root, r"decay_lr=False asks for a constant .* schedule='wsd'", decay_lr=False,
           schedule='wsd')
    _fails(tmp_path, data_root, r"dropout=1.5 must be in \[0, 1\)", dropout=1.5)
    _fails(tmp_path, data_root, r"finetune_data is used only with init_from='finetune'", finetune_data='x.jsonl')
    recs = run_train(tmp_path / 'const', data_root, decay_lr=False, max_iters=2, warmup_iters=0)  # nanoGPT's way
    assert [r['lr'] for r in recs if 'lr' in r] == [1e-2, 1e-2]
    assert json.loads((tmp_path / 'const' / 'config.json').read_text())['schedule'] == 'constant'


def test_full_disk_at_a_checkpoint_stops_with_one_message(tmp_path, data_root, monkeypatch):
    def full_disk(obj, f):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(SystemExit, match=r"step-2 checkpoint .*No space left on device: free disk space"):
        run_train(tmp_path / 'run', data_root, max_iters=4, eval_interval=2)
    assert not list((tmp_path / 'run').glob('*.tmp')) and not list((tmp_path / 'run').glob('ckpt*'))


def test_resume_from_a_truncated_checkpoint_names_the_intact_one(tmp_path, data_root):
    out = tmp_path / 'run'
    run_train(out, data_root, max_iters=2, eval_interval=1, keep_last_k=2)
    with open(out / 'ckpt.pt', 'r+b') as f:  # also truncates ckpt_0000002.pt: the same file (a hard link)
        f.truncate(1000)
    with pytest.raises(SystemExit) as e:
        run_train(out, data_root, max_iters=4, init_from='resume')
    assert 'truncated or corrupt' in str(e.value) and 'ckpt_0000001.pt (step 1)' in str(e.value)
    assert 'weights_only' not in str(e.value)


def test_train_py_reads_top_to_bottom():
    """No function in train.py reads a module-level name that is assigned below its definition (only the
    training loop at the bottom may update the counters that progress() reads)."""
    import ast
    import builtins
    tree = ast.parse((ROOT / 'train.py').read_text())
    loop = next(n for n in reversed(tree.body) if isinstance(n, ast.While))
    assigned: dict[str, list[int]] = {}  # name -> lines of its module-level assignments (the loop excluded)
    for node in tree.body:
        if node is loop:
            continue
        if isinstance(node, (ast.FunctionDef, ast.Import, ast.ImportFrom)):
            names = [node.name] if isinstance(node, ast.FunctionDef) else [(a.asname or a.name).split('.')[0]
                                                                          for a in node.names]
        else:
            names = [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                     and not any(n in ast.walk(f) for f in ast.walk(node) if isinstance(f, ast.comprehension))] + [
                (a.asname or a.name).split('.')[0] for i in ast.walk(node) if isinstance(i, ast.Import)
                for a in i.names]
        for name in names:
            assigned.setdefault(name, []).append(node.lineno)
    late = []
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        local = {a.arg for a in ast.walk(fn.args) if isinstance(a, ast.arg)} | {
            n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)} | {
            h.name for h in ast.walk(fn) if isinstance(h, ast.ExceptHandler) and h.name} | {
            (a.asname or a.name).split('.')[0] for i in ast.walk(fn) if isinstance(i, (ast.Import, ast.ImportFrom))
            for a in i.names}
        for n in ast.walk(fn):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local \
                    and not hasattr(builtins, n.id) and n.id != '__file__':
                lines = assigned.get(n.id, [])
                if not lines or max(lines) > fn.lineno:
                    late.append(f"{fn.name} (line {fn.lineno}) reads {n.id}, assigned at lines {lines}")
    assert not late, sorted(set(late))


def test_cpu_run_shows_no_mfu_and_says_why_once(tmp_path, tiny_dataset):
    """`python train.py` on CPU: no MFU in the progress bar or metrics.jsonl (no honest CPU peak: a timed matmul
    is a lower bound the run beats, which showed mfu=100.0%), one line saying why, and no warning at all."""
    from conftest import train_py
    from mfu import NO_CPU_PEAK
    r = train_py(tmp_path / 'run', tiny_dataset.parent, tiny_dataset.name, max_iters=6, log_interval=1,
                 eval_interval=3, env={'PYTHONWARNINGS': 'always'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(NO_CPU_PEAK) == 1
    assert 'mfu' not in r.stderr and 'Warning' not in r.stderr + r.stdout
    recs = _metrics(tmp_path / 'run')
    assert len([x for x in recs if 'tokens_per_sec' in x]) == 6 and not any('mfu' in x for x in recs)
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['peak_flops'] is None and cfg['peak_flops_source'] == NO_CPU_PEAK
