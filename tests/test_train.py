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
from conftest import TINY_TRAIN, read_jsonl, train_py
from torch.nn import functional as F

import checkpoint
import configurator
import data
import losses
from chat import ChatLoader, load_chat_jsonl
from loader import get_batch
from model import GPT, GPTConfig

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
def test_resume_of_a_checkpoint_written_before_the_rope_keys(tmp_path, tiny_dataset):
    """A checkpoint whose model_args lack model keys added later (rope_theta, rope_fraction) resumes with
    their defaults, the function it was trained with."""
    from conftest import train_py
    out = tmp_path / 'run'
    assert train_py(out, tiny_dataset.parent, tiny_dataset.name).returncode == 0
    ckpt = torch.load(out / 'ckpt.pt', weights_only=True)
    for key in ('rope_theta', 'rope_fraction'):
        del ckpt['model_args'][key], ckpt['config'][key]
    torch.save(ckpt, out / 'ckpt.pt')
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name, init_from='resume', max_iters=3)
    assert r.returncode == 0, r.stderr
    assert torch.load(out / 'ckpt.pt', weights_only=True)['model_args']['rope_fraction'] == 0.5


@pytest.mark.slow
@pytest.mark.parametrize('cls, kw', [('LlamaForCausalLM', dict(num_key_value_heads=1, tie_word_embeddings=False)),
                                     ('StableLmForCausalLM', dict(num_key_value_heads=2, partial_rotary_factor=0.5))])
def test_init_from_hf_llama_family_folder(tmp_path, tiny_dataset, cls, kw):
    """init_from='hf:<folder>' (hf.load_hf): a random transformers Llama / StableLM folder starts the run; with
    learning_rate=0 the run's checkpoint computes the folder's logits, and the run records the layout's keys."""
    from conftest import train_py
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    config = getattr(transformers, cls.replace('ForCausalLM', 'Config'))
    hf = getattr(transformers, cls)(config(vocab_size=512, hidden_size=32, intermediate_size=256, num_hidden_layers=2,
                                           num_attention_heads=2, max_position_embeddings=32, rms_norm_eps=1e-5,
                                           layer_norm_eps=1e-5, **kw)).eval()
    hf.save_pretrained(tmp_path / 'hf')
    r = train_py(tmp_path / 'run', tiny_dataset.parent, tiny_dataset.name, init_from=f"hf:{tmp_path / 'hf'}",
                 max_iters=1, eval_interval=1, warmup_iters=0, learning_rate=0.0, min_lr=0.0, bias=False)
    assert r.returncode == 0, r.stderr
    run = checkpoint.load_run(tmp_path / 'run')
    x = torch.randint(0, 512, (2, 32))
    with torch.no_grad():
        assert (run.model(x) - hf(x).logits).abs().max().item() <= 1e-4
    assert run.config['pos'] == 'rope' and run.config['rope_fraction'] == (1.0 if 'Llama' in cls else 0.5)


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


def test_full_disk_at_a_checkpoint_stops_with_one_message(tmp_path, data_root, monkeypatch):
    def full_disk(obj, f):
        f.write(b'partial')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(SystemExit, match=r"step-2 checkpoint .*the disk is full .*free space"):
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


# -----------------------------------------------------------------------------
# the loop, quick: a few steps of the tiny model, seconds each (the long end-to-end versions above are slow)

def _same(a: float, b: float) -> bool:
    """Bitwise-equal logged floats (a skipped step logs its non-finite loss as null)."""
    return repr(a) == repr(b)


def test_resume_quick_is_bitwise_and_carries_every_counter(tmp_path, data_root):
    """4 steps uninterrupted = 2 steps, then resumed to 4: every logged loss, the final weights and optimizer
    state bitwise, and every counter the checkpoint carries (step, tokens, skipped steps, best val loss, loader
    position); a skipped non-finite step before the cut must still be counted after it."""
    # lr 0.5 without warmup makes the val loss rise above the step-0 one: the best val loss is then the one
    # recorded before the cut, which only a correctly restored counter carries to the end
    flags = dict(max_iters=4, eval_interval=2, lr_decay_iters=4, dropout=0.1, keep_last_k=1, skip_nonfinite=True,
                 inject_nonfinite_at_step=2, learning_rate=0.5, min_lr=0.05, warmup_iters=0)
    full = run_train(tmp_path / 'full', data_root, **flags)
    run_train(tmp_path / 'cut', data_root, **(flags | dict(max_iters=2)))
    cut = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    assert cut['step'] == 2 and cut['nonfinite_skipped'] == 1 and cut['tokens'] == 2 * 4 * 32
    shutil.copytree(tmp_path / 'cut', tmp_path / 'cut2')
    resumed = run_train(tmp_path / 'cut', data_root, **flags, init_from='resume')
    a, b = _losses(full), _losses(resumed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and all(_same(a[s], b[s]) for s in a), (a, b)
    assert b[2] is None and all(math.isfinite(b[s]) for s in (1, 3, 4))  # non-finite is logged as null
    f = torch.load(tmp_path / 'full' / 'ckpt.pt', weights_only=True)
    r = torch.load(tmp_path / 'cut' / 'ckpt.pt', weights_only=True)
    for key in ('step', 'tokens', 'nonfinite_skipped', 'best_val_loss', 'loader', 'schedule'):
        assert f[key] == r[key], key
    assert f['step'] == 4 and f['nonfinite_skipped'] == 1 and f['tokens'] == 4 * 4 * 32
    evals = [rec['val_loss'] for rec in full if 'val_loss' in rec]
    assert f['best_val_loss'] == min(evals) == evals[0] < min(evals[1:])
    assert all(torch.equal(f['model'][k], r['model'][k]) for k in f['model'])
    for k, state in f['optimizer']['state'].items():
        assert all(torch.equal(v, r['optimizer']['state'][k][n]) for n, v in state.items()), k
    for name in ('full', 'cut'):
        summary = json.loads((tmp_path / name / 'summary.json').read_text())
        assert summary['nonfinite_skipped'] == 1 and summary['tokens'] == f['tokens'] and summary['step'] == 4
    # a step skipped after the resume adds to the one skipped before it
    run_train(tmp_path / 'cut2', data_root, **(flags | dict(inject_nonfinite_at_step=4)), init_from='resume')
    assert torch.load(tmp_path / 'cut2' / 'ckpt.pt', weights_only=True)['nonfinite_skipped'] == 2


def _schedule_by_hand(it: int, schedule: str, lr: float, min_lr: float, warmup: int, decay_iters: int,
                      max_iters: int, wsd_frac: float) -> float:
    """nanoGPT's get_lr (linear warmup lr*(it+1)/(warmup+1), cosine to min_lr), and WSD (Hu et al. 2024,
    arXiv:2404.06395: constant, then linear to min_lr over the last wsd_frac of max_iters), written out again."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if schedule == 'cosine':
        if it > decay_iters:
            return min_lr
        return min_lr + 0.5 * (1 + math.cos(math.pi * (it - warmup) / (decay_iters - warmup))) * (lr - min_lr)
    start = max_iters - round(wsd_frac * max_iters)
    return lr if it < start else lr + min(1.0, (it - start) / (max_iters - start)) * (min_lr - lr)


@pytest.mark.parametrize('schedule', ['cosine', 'wsd'])
def test_logged_lr_is_the_schedule_and_the_one_adamw_applied(tmp_path, data_root, schedule):
    """The lr logged at step s (s steps done) is the schedule at iteration s-1, and it is the lr the optimizer
    used: with weight decay 0, AdamW's update is p_{s-1} - p_s = lr * m_hat / (sqrt(v_hat) + eps), so the lr
    implied by two consecutive checkpoints (ckpt_<s-1>, ckpt_<s> with its moments) must equal the logged one."""
    hp = dict(learning_rate=1e-2, min_lr=1e-3, warmup_iters=2, lr_decay_iters=5, max_iters=7, wsd_decay_frac=0.5)
    recs = run_train(tmp_path / 'run', data_root, schedule=schedule, eval_interval=1, keep_last_k=10,
                     weight_decay=0.0, beta1=0.9, beta2=0.95, grad_clip=0.0, **hp)  # 0 = no clipping
    logged = {r['step']: r['lr'] for r in recs if 'lr' in r}
    expect = {s: _schedule_by_hand(s - 1, schedule, hp['learning_rate'], hp['min_lr'], hp['warmup_iters'],
                                   hp['lr_decay_iters'], hp['max_iters'], hp['wsd_decay_frac']) for s in range(1, 8)}
    assert logged.keys() == expect.keys()
    assert all(math.isclose(logged[s], expect[s], rel_tol=1e-12) for s in expect), (logged, expect)
    assert len(set(round(v, 12) for v in expect.values())) >= 4  # warmup, peak and decay all exercised
    ckpts = checkpoint.step_files(tmp_path / 'run')
    assert sorted(ckpts) == list(range(1, 8))
    # a matrix (the decayed group) and a norm gain (the no-decay group): every group must get the lr
    for name in ('transformer.h.0.mlp.c_fc.weight', 'transformer.ln_f.weight'):
        for s in range(2, 8):
            before = torch.load(ckpts[s - 1], weights_only=True)['model'][name].double()
            after = torch.load(ckpts[s], weights_only=True)
            st = after['optimizer']['state'][name]
            t = float(st['step'])
            assert t == s
            direction = (st['exp_avg'].double() / (1 - 0.9 ** t)) / (
                (st['exp_avg_sq'].double() / (1 - 0.95 ** t)).sqrt() + 1e-8)
            big = direction.abs() > 0.1
            assert big.sum() >= 8
            implied = ((before - after['model'][name].double())[big] / direction[big]).median().item()
            assert math.isclose(implied, logged[s], rel_tol=1e-3), (name, s, implied, logged[s])


def test_per_language_val_loss_and_bits_per_byte_quick(tmp_path, data_root):
    """Every val_loss/<lang> is the mean F.cross_entropy of the checkpoint over train.py's fixed windows of that
    language's split (generator seed + 7), and val_bpb/<lang> = nats / ln 2 x tokens per byte from meta.json
    (0.5 here: the helper records twice as many bytes as tokens). The long version on data.py's output is slow."""
    text = (data_root / 'en' / 'train.bin').read_bytes()[::2][:40_000]  # bytes of English text (uint16 -> low byte)
    _write_bytes_dataset(tmp_path / 'data' / 'two', text, langs={'xx': text[:3000], 'yy': text[::-1][:3000]})
    recs = run_train(tmp_path / 'run', tmp_path / 'data', dataset='two', max_iters=2, eval_interval=2)
    ev = [r for r in recs if 'val_loss' in r][-1]
    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    for lang in ('xx', 'yy'):
        val = data.load_tokens(tmp_path / 'data' / 'two', f'val_{lang}')
        gen = torch.Generator().manual_seed(ckpt['config']['seed'] + 7)
        with torch.no_grad():
            ce = sum(torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                     for x, y in (get_batch(val, TINY['batch_size'], TINY['block_size'], gen)
                                  for _ in range(TINY['eval_iters']))) / TINY['eval_iters']
        assert ev[f'val_loss/{lang}'] == pytest.approx(ce, rel=1e-5), lang
        assert ev[f'val_bpb/{lang}'] == pytest.approx(ce / math.log(2) * 0.5, rel=1e-5), lang
    assert ev['val_loss/xx'] != ev['val_loss/yy']


def test_gradient_of_micro_steps_equals_one_batch_quick(tmp_path, data_root):
    """8 sequences per step as 1 x 8 or 4 micro-steps x 2: the logged gradient norm (before clipping) and loss
    agree, so the loss of every micro-step is weighted by its share of the batch. The ranks x micro-steps grid
    is the slow split grid in test_distributed.py."""
    flags = dict(max_iters=2, eval_interval=2, grad_clip=0.0, tie_embeddings=False, mu_loss=1e-2, z_loss=1e-3)
    one = run_train(tmp_path / 'one', data_root, batch_size=8, gradient_accumulation_steps=1, **flags)
    four = run_train(tmp_path / 'four', data_root, batch_size=2, gradient_accumulation_steps=4, **flags)
    a, b = ([r for r in recs if 'grad_norm' in r] for recs in (one, four))
    assert [r['step'] for r in a] == [r['step'] for r in b] == [1, 2] and a[0]['grad_norm'] > 0.1
    for x, y in zip(a, b):
        for key in ('grad_norm', 'loss', 'mu_loss', 'z_loss'):
            assert x[key] == pytest.approx(y[key], rel=1e-5), (key, x, y)
        assert x['tokens'] == y['tokens']


def test_two_ddp_ranks_give_the_loss_and_gradient_of_one_process_quick(tmp_path, data_root):
    """2 gloo ranks x 4 sequences = 1 process x 8: logged loss, terms and gradient norm (before clipping) agree,
    so each rank's micro-step weight counts the world size and the logged loss is averaged over the ranks.
    The full grid of splits (DDP and FSDP2, accumulation) is slow, in test_distributed.py."""
    from conftest import train_py
    flags = dict(max_iters=2, eval_interval=2, lr_decay_iters=2, warmup_iters=1, grad_clip=0.0, mu_loss=1e-2,
                 tie_embeddings=False, dtype='float32')
    flags |= {k: v for k, v in TINY.items() if k not in flags and k != 'batch_size'}
    one = run_train(tmp_path / 'one', data_root, batch_size=8, **flags)
    r = train_py(tmp_path / 'two', data_root, 'en', nproc=2, parallelism='ddp', batch_size=4,
                 gradient_accumulation_steps=2, bias=False, **flags)  # run_train's TINY has no bias
    assert r.returncode == 0, r.stderr[-3000:]
    a = [x for x in one if 'grad_norm' in x]
    b = [x for x in _metrics(tmp_path / 'two') if 'grad_norm' in x]
    assert [x['step'] for x in a] == [x['step'] for x in b] == [1, 2] and a[0]['grad_norm'] > 0.1
    for x, y in zip(a, b):
        for key in ('grad_norm', 'loss', 'mu_loss'):
            assert x[key] == pytest.approx(y[key], rel=1e-5), (key, x, y)
        assert x['tokens'] == y['tokens']


def test_a_skipped_step_changes_no_weight_with_mu_centering(tmp_path, data_root):
    """skip_nonfinite: a skipped step is no step at all; mu-centering, applied after each step, must not run
    either (it would centre the untrained output embedding): the weights equal those of the same skipped
    step without mu-centering."""
    flags = dict(max_iters=1, eval_interval=1, warmup_iters=0, lr_decay_iters=1, skip_nonfinite=True,
                 inject_nonfinite_at_step=1, tie_embeddings=False)
    run_train(tmp_path / 'mu', data_root, mu_centering=True, **flags)
    run_train(tmp_path / 'plain', data_root, **flags)
    a, b = (torch.load(tmp_path / n / 'ckpt.pt', weights_only=True) for n in ('mu', 'plain'))
    assert a['nonfinite_skipped'] == b['nonfinite_skipped'] == 1
    assert all(torch.equal(a['model'][k], b['model'][k]) for k in a['model'])
    assert a['model']['lm_head.weight'].mean(0).abs().max() > 1e-4  # not centred: a centring would show


@pytest.mark.slow
def test_compiled_run_compiles_one_graph_and_evals_eagerly(tmp_path, tiny_dataset):
    """compile=True: the training forward (loss inside) is the one graph torch.compile makes; the evals at step 0
    and at the end run the eager model, so no second graph (no_grad, eval mode) is compiled at the step-0 eval.
    (tests/probe_train.py counts dynamo's graphs; backend aot_eager: the same graphs, no code generation.)"""
    args = dict(TINY, out_dir=str(tmp_path / 'run'), data_root=str(tiny_dataset.parent), dataset=tiny_dataset.name,
                compile=True, max_iters=2, eval_interval=2)
    proc = subprocess.run([sys.executable, str(ROOT / 'tests' / 'probe_train.py'), str(tmp_path / 'probe'),
                           *[f'--{k}={v}' for k, v in args.items()]], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1', PROBE_BACKEND='aot_eager'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / 'probe' / 'probe_rank0.json').read_text())['unique_graphs'] == 1
    assert len([r for r in _metrics(tmp_path / 'run') if 'val_loss' in r]) == 2  # both evals ran
    assert json.loads((tmp_path / 'run' / 'config.json').read_text())['compile'] is True


def test_a_preset_runs_globals_equal_its_config_json(tmp_path, tiny_dataset):
    """One config view: after resolution (here model_preset=oec-16m: 6 layers over the default 4, its context,
    vocab_multiple) every config key train.py's loop reads as a global has the value config.json records."""
    out = tmp_path / 'run'
    keys = dict(model_preset='oec-16m', block_size=32, batch_size=2, max_iters=1, eval_interval=1, eval_iters=1,
                sample_tokens=0, device='cpu', dtype='float32', out_dir=out, data_root=tiny_dataset.parent,
                dataset=tiny_dataset.name)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    old_argv, sys.argv = sys.argv, ['train.py'] + [f'--{k}={v}' for k, v in keys.items()]
    try:
        run = runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')  # the module's globals at the end
    finally:
        sys.argv = old_argv
        for s, h in handlers.items():
            signal.signal(s, h)
    cfg = json.loads((out / 'config.json').read_text())
    defaults = configurator.script_defaults(str(ROOT / 'train.py'))
    assert cfg['n_layer'] == 6 and cfg['model_args']['n_layer'] == 6  # the preset, not the default 4
    assert json.loads(json.dumps({k: run[k] for k in defaults})) == {k: cfg[k] for k in defaults}


def test_a_new_loss_term_takes_three_lines_and_reaches_metrics_by_name(tmp_path, tiny_dataset, monkeypatch):
    """docs/model.md's recipe: a function, its LOSS_TERMS entry and its weight's line in train.py's config block
    (here in a copy of train.py) give a trained term, logged under its name; the logged loss is the weighted sum."""
    source = (ROOT / 'train.py').read_text()
    anchor = "mu_centering = False"
    assert source.count(anchor) == 1
    script = tmp_path / 'train.py'
    script.write_text(source.replace(anchor, "logit_l2 = 0.0  # lambda of mean(logits^2)\n" + anchor))
    monkeypatch.setitem(losses.LOSS_TERMS, 'logit_l2', lambda x: x.logits.square().mean())
    out = tmp_path / 'run'
    keys = dict(TINY, max_iters=2, eval_interval=2, out_dir=out, data_root=tiny_dataset.parent,
                dataset=tiny_dataset.name, z_loss=1e-2, logit_l2=1e-3)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    monkeypatch.setattr(sys, 'argv', ['train.py'] + [f'--{k}={v}' for k, v in keys.items()])
    try:
        runpy.run_path(str(script), run_name='__main__')
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    steps = [r for r in _metrics(out) if 'loss' in r]
    assert len(steps) == 2 and all(r['logit_l2'] > 0 and 'mu_loss' not in r for r in steps)
    for r in steps:
        assert r['loss'] == pytest.approx(r['ce'] + 1e-2 * r['z_loss'] + 1e-3 * r['logit_l2'], rel=1e-6)
    assert json.loads((out / 'config.json').read_text())['logit_l2'] == 1e-3
def test_eval_record_explains_the_mean_logit(trained_run):
    """Every eval record holds |h_bar|, mu.h_bar (fhs_dot_prod), cos(mu, h_bar), mean ||h|| over the diagnostic
    val batches and the final norm's mean gain: recomputed here from the checkpoint on the same batches."""
    import evaluation
    from model import GPT, GPTConfig
    rec = [r for r in _metrics(trained_run) if 'val_loss' in r][-1]
    ckpt = checkpoint.load_checkpoint(trained_run / 'ckpt.pt')
    assert rec['step'] == ckpt['step']
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    cfg = ckpt['config']
    val = data.load_tokens(Path(cfg['data_root']) / cfg['dataset'], 'val')
    batches = evaluation.fixed_batches(val, cfg['batch_size'], cfg['block_size'], seed=cfg['seed'] + 7)
    n_diag = min(4, cfg['eval_iters'])  # train.py's evaluate()
    with torch.no_grad():
        found = [losses.hidden_diagnostics(model.hidden_states(batches()[0]), model.output_embedding())
                 for _ in range(n_diag)]
    for key in ('h_bar_norm', 'fhs_dot_prod', 'fhs_cos_sim', 'mean_norm_h'):
        assert rec[key] == pytest.approx(sum(d[key] for d in found) / n_diag, rel=1e-5, abs=1e-7), key
    assert rec['fhs_dot_prod'] == pytest.approx(rec['logits_mean_mean'], rel=1e-3, abs=1e-5)  # fp32: the same
    assert rec['final_norm_gain_mean'] == pytest.approx(ckpt['model']['transformer.ln_f.weight'].mean().item())


@pytest.mark.slow
def test_gauge_shift_keeps_the_fp32_loss_and_is_applied_once(tmp_path, tiny_dataset, capsys):
    """config/oec_mechanism.py's step: a run continued from another run's checkpoint with --gauge_shift shifts
    the output embedding once, evaluates right away (the fp32 val loss equals the unshifted one; mu.h_bar is
    near the target, which is set on train batches), and a later resume does not shift again."""
    root, name = tiny_dataset.parent, tiny_dataset.name
    before = [r for r in run_train(tmp_path / 'a', root, name, max_iters=4, tie_embeddings=False)
              if 'val_loss' in r][-1]
    (tmp_path / 'b').mkdir()
    for f in ('ckpt.pt', 'metrics.jsonl'):
        shutil.copyfile(tmp_path / 'a' / f, tmp_path / 'b' / f)
    capsys.readouterr()
    evals = [r for r in run_train(tmp_path / 'b', root, name, init_from='resume', max_iters=6, gauge_shift=300.0)
             if 'val_loss' in r]
    assert capsys.readouterr().out.count('gauge shift at step 4') == 1
    at_shift = evals[-2]  # the copied step-4 eval is evals[-3]; then the one right after the shift; then step 6
    assert [r['step'] for r in evals[-3:]] == [4, 4, 6]
    assert at_shift['val_loss'] == pytest.approx(before['val_loss'], abs=1e-3)  # a gauge change
    assert abs(before['fhs_dot_prod']) < 20 and 200 < at_shift['fhs_dot_prod'] < 400
    assert at_shift['mu_norm'] > 10 * before['mu_norm']
    assert checkpoint.load_checkpoint(tmp_path / 'b' / 'ckpt.pt')['gauge_shifted'] is True
    recs = run_train(tmp_path / 'b', root, name, init_from='resume', max_iters=8, gauge_shift=300.0)
    assert 'gauge shift' not in capsys.readouterr().out
    assert [r['step'] for r in recs if 'val_loss' in r][-4:] == [4, 4, 6, 8]


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


# -----------------------------------------------------------------------------------------------------------
# Per-language evaluation on the producers' output: data.py prepares a two-language
# dataset from the shared text (val_sv.bin, val_da.bin and meta.json's token and byte counts, not a hand-written
# meta.json), train.py trains 2 steps on it, and every logged val_loss/<lang> and val_bpb/<lang> is recomputed
# independently from the checkpoint: the mean cross-entropy (torch.nn.functional) over the same fixed validation
# windows, and bits per byte = nats per token / ln 2 x tokens per UTF-8 byte of that language's validation text.

@pytest.mark.slow
def test_val_loss_and_bits_per_byte_per_language(tmp_path, corpora):
    src = {}
    for lang in ('sv', 'da'):
        lines = (corpora / 'text' / f'{lang}.txt').read_text(encoding='utf-8').splitlines()[:1500]
        src[lang] = tmp_path / 'in' / lang / 'text.txt'
        src[lang].parent.mkdir(parents=True)
        src[lang].write_text('\n'.join(lines) + '\n', encoding='utf-8')
    folder = data.prepare_dataset('svda', data_root=tmp_path / 'data', vocab_size=400, num_proc=1,
                                  sources={lang: str(p) for lang, p in src.items()})
    meta = data.load_meta(folder)
    assert sorted(meta['val_splits']) == ['val_da', 'val_sv']
    r = train_py(tmp_path / 'run', folder.parent, folder.name)
    assert r.returncode == 0, r.stderr[-3000:]
    ev = [x for x in read_jsonl(tmp_path / 'run' / 'metrics.jsonl') if 'val_loss' in x][-1]

    ckpt = torch.load(tmp_path / 'run' / 'ckpt.pt', weights_only=True)
    model = GPT(GPTConfig(**ckpt['model_args']))
    model.load_state_dict(ckpt['model'])
    model.eval()
    B, T, n = TINY_TRAIN['batch_size'], TINY_TRAIN['block_size'], TINY_TRAIN['eval_iters']
    for lang in ('sv', 'da'):
        val = data.load_tokens(folder, f'val_{lang}')
        gen = torch.Generator().manual_seed(ckpt['config']['seed'] + 7)  # train.py's fixed eval windows
        with torch.no_grad():
            ce = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                     for x, y in (get_batch(val, B, T, gen) for _ in range(n))) / n
        assert ev[f'val_loss/{lang}'] == pytest.approx(ce, rel=1e-5), lang
        lm = meta['languages'][lang]
        assert lm['val_tokens'] == len(val)
        text = data.dataset_tokenizer(folder).decode([t for t in val.tolist() if t != meta['eot']])
        # the validation text's UTF-8 bytes (documents joined: the EOT separators are no text)
        assert abs(lm['val_bytes'] - len(text.encode('utf-8'))) <= lm['val_docs']
        assert ev[f'val_bpb/{lang}'] == pytest.approx(ce / math.log(2) * len(val) / lm['val_bytes'], rel=1e-5)
    assert ev['val_loss/sv'] != ev['val_loss/da']
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['dataset'] == 'svda'
