"""The GPU check: one command on one GPU machine without internet, at most 8 minutes on one H100.

    python bench/gpu_check.py --out=OUT                  # on the GPU machine (bash bench/gpu.sh is the same)
    python bench/gpu_check.py --device=cpu --out=OUT     # rehearsal on a CPU: tiny shapes, every code path

Checks, in this order (the most telling first, so a cut-short run still answers the main questions); expected
seconds on one H100 and each check's own timeout (a check also stops where the budget ends):
    preflight      torch, CUDA, device name, bf16, the peak FLOP/s MFU uses, C compiler + triton   ~10 s   60 s
    data           random tokens (GPT-2 / GPT-SW3 vocabularies) and this repository's bytes         ~5 s    60 s
    syncs          one training step (Coupled Adam, fused AdamW, mu-centering) under               ~10 s   60 s
                   torch.cuda.set_sync_debug_mode('error'): a host-device sync fails it
    parity         GPU vs CPU losses, 6 fp32 steps, base model and every paper feature             ~40 s  120 s
    dist_1rank     DDP, FSDP2 and an FSDP2 sharded (DCP) checkpoint resumed, torchrun on 1 rank,   ~60 s  150 s
                   losses equal the plain run
    mfu_124m       GPT-2 124M, bf16 autocast + compile, batch 16 x 1024, 60 steps                  ~90 s  170 s
    mfu_356m       GPT-SW3 356M shape, batch 8 x 2048, 40 steps                                    ~110 s 170 s
    tf32           the fp32 124M step (eager) with TF32 on vs off, 20 steps each                   ~60 s  120 s
    vs_loop        bench/bench_train.py: train.py vs the plainest loop vs HF GPT-2, bf16 + compile ~150 s 170 s
About 390 s expected up to tf32 (budget_s=470 leaves the rest to vs_loop, which is SKIPped when it no longer fits).
A check that does not fit in the budget left is SKIP with the reason, never FAIL.

Results survive a kill: each finished check appends one line to OUT/results.txt and one JSON line of figures to
OUT/figures.jsonl at once (flushed, fsynced); OUT/log.txt gets the tail of every failed run's log. Those three
files are all that is written under OUT (scratch runs go to a temporary folder, removed at the end).
docs/benchmarks.md says how the README's benchmark table is filled from figures.jsonl.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import optim  # noqa: E402
from configurator import configure  # noqa: E402
from losses import IGNORE_INDEX  # noqa: E402
from mfu import peak_flops  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

DEFAULTS = dict(
    device='cuda',  # 'cuda' (the check) | 'cpu' (rehearsal: tiny shapes, no compile, gloo ranks)
    out='gpu_check_out',  # results.txt, figures.jsonl, log.txt (appended; an existing folder is added to)
    budget_s=470,  # seconds for all checks (one 8-minute call, minus start-up); a check that no longer fits: SKIP
    only='',  # comma-separated check names to run ('' = all, in order)
    python=sys.executable,  # the Python with the machine's CUDA torch (runs train.py and torchrun)
)
# shapes: (H100, rehearsal on a CPU)
SMALL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=8, max_iters=6, eval_interval=6,
             eval_iters=2, log_interval=1, warmup_iters=2, lr_decay_iters=6, learning_rate=3e-3, min_lr=3e-4,
             sample_tokens=0, dtype='float32', tf32=False, vocab_multiple=1, compile=False)
TINY_SMALL = dict(SMALL, n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4)
FEATURES = dict(pos='rope', mlp='swiglu', qk_norm=True, init='xavier', tie_embeddings=False, logit_softcap=30,
                n_kv_head=2, bias=False, z_loss=1e-4, mu_loss=1e-4, mu_centering=True, optimizer='coupled_adam',
                norm='dyisru_sp')
MFU = dict(dtype='bfloat16', eval_interval=1000000, eval_iters=1, log_interval=10, sample_tokens=0, warmup_iters=10,
           learning_rate=6e-4, min_lr=6e-5, always_save_checkpoint=False)
SHAPES = {
    'mfu_124m': (dict(model_preset='gpt2', dataset='gpt2', batch_size=16, block_size=1024, max_iters=60,
                      lr_decay_iters=60),
                 dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=4, dataset='gpt2', max_iters=30,
                      lr_decay_iters=30)),
    'mfu_356m': (dict(model_preset='gpt-sw3-356m', dataset='sw3', batch_size=8, block_size=2048, max_iters=40,
                      lr_decay_iters=40),
                 dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=4, dataset='sw3', max_iters=30,
                      lr_decay_iters=30)),
    'tf32': (dict(model_preset='gpt2', dataset='gpt2', batch_size=16, block_size=1024, max_iters=20,
                  lr_decay_iters=20, log_interval=5, warmup_iters=5),
             dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=4, dataset='gpt2', max_iters=10,
                  lr_decay_iters=10, log_interval=5, warmup_iters=5)),
    'vs_loop': (dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=8, steps=10, warmup=3),
                dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=4, steps=2, warmup=1)),
}
DATA_TOKENS = (12_000_000, 200_000)  # random tokens per dataset (H100, CPU)
# MFU predicted on one H100 SXM from the step's FLOP and byte counts (docs/benchmarks.md): (expected, low, high)
PREDICTED_MFU = {'mfu_124m': (0.42, 0.37, 0.47), 'mfu_356m': (0.45, 0.40, 0.50)}


# -----------------------------------------------------------------------------
# recording: one line and one JSON line per finished check, written at once

def record(ctx: dict, name: str, status: str, message: str, **figures) -> None:
    """Append `RESULT name STATUS message` to results.txt and {check, status, seconds, ...figures} to
    figures.jsonl, flushed and fsynced (a kill a moment later keeps them); also printed."""
    line = f"RESULT {name:<12} {status:<4} {message}"
    print(line, flush=True)
    seconds = round(time.time() - ctx['check_t0'], 1)
    for fname, text in (('results.txt', line), ('figures.jsonl', json.dumps(dict(
            check=name, status=status, seconds=seconds, device=ctx['device_name'], **figures)))):
        with open(Path(ctx['out']) / fname, 'a') as f:
            f.write(text + '\n')
            f.flush()
            os.fsync(f.fileno())


def log_tail(ctx: dict, run: str, n: int = 40) -> str:
    """The last n lines of a run's log, also appended to OUT/log.txt; returns the last line that names an error."""
    path = Path(ctx['work']) / 'runs' / f'{run}.log'
    lines = path.read_text(errors='replace').splitlines() if path.exists() else []
    with open(Path(ctx['out']) / 'log.txt', 'a') as f:
        f.write(f"==== {run} (last {n} lines)\n" + '\n'.join(lines[-n:]) + '\n')
    why = [ln for ln in lines if 'Error' in ln or 'train.py: ' in ln or 'error' in ln]
    return (why or lines or ['no log'])[-1].strip()[:200]


# -----------------------------------------------------------------------------
# running train.py (and torchrun, bench_train.py) as a user would

def _argv(args: dict) -> list[str]:
    return [f'--{k}={v}' for k, v in args.items()]


def start_train(ctx: dict, run: str, args: dict, nproc: int = 0, script: str = 'train.py') -> subprocess.Popen:
    """Start `python train.py` (or torchrun on nproc ranks) with args, its output to work/runs/<run>.log."""
    runs = Path(ctx['work']) / 'runs'
    runs.mkdir(parents=True, exist_ok=True)
    if script == 'train.py':
        args = dict(data_root=str(Path(ctx['work']) / 'data'), out_dir=str(runs / run)) | args
    launcher = [ctx['python']] + (['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}']
                                  if nproc else [])
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '4'))
    return subprocess.Popen(launcher + [str(ROOT / script)] + _argv(args), cwd=ROOT, env=env,
                            stdout=open(runs / f'{run}.log', 'w'), stderr=subprocess.STDOUT)


def run_all(ctx: dict, specs: dict, timeout: float, together: bool = True) -> dict[str, int]:
    """Run {run: (args, nproc)} (at once on a GPU machine unless together=False, as for timings; one after another
    on a CPU); exit codes, 124 where a run did not finish within `timeout` seconds from the start (it is killed)."""
    t_end, rcs = time.time() + timeout, {}
    together = together and ctx['device'] != 'cpu'
    procs = {}
    for run, (args, nproc) in specs.items():
        procs[run] = start_train(ctx, run, args, nproc, **({'script': args.pop('_script')} if '_script' in args
                                                            else {}))
        if not together:
            rcs[run] = _wait(procs[run], t_end)
    for run, proc in procs.items():
        if run not in rcs:
            rcs[run] = _wait(proc, t_end)
    return rcs


def _wait(proc: subprocess.Popen, t_end: float) -> int:
    try:
        return proc.wait(timeout=max(1.0, t_end - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return 124


def losses_by_step(ctx: dict, run: str) -> dict[int, float]:
    path = Path(ctx['work']) / 'runs' / run / 'metrics.jsonl'
    return {r['step']: r['loss'] for r in map(json.loads, path.read_text().splitlines()) if 'loss' in r}


def compare_losses(ctx: dict, a: str, b: str, tol: float) -> tuple[bool, float, int]:
    """(every common step within tol, the largest relative loss difference, number of common steps)."""
    la, lb = losses_by_step(ctx, a), losses_by_step(ctx, b)
    steps = sorted(set(la) & set(lb))
    d = max((abs(la[s] - lb[s]) / abs(lb[s]) for s in steps), default=float('inf'))
    return bool(steps) and d <= tol, d, len(steps)


def failed_runs(ctx: dict, rcs: dict[str, int]) -> str:
    """'' when every run exited 0, else 'run: exit N (last error line)' for each that did not."""
    return '; '.join(f"{run}: {'timeout' if rc == 124 else f'exit {rc}'} ({log_tail(ctx, run)})"
                     for run, rc in rcs.items() if rc != 0)


# -----------------------------------------------------------------------------
# the checks: each returns (status, message, figures)

def check_preflight(ctx: dict, limit: float):
    """torch, CUDA, the device's name, bf16, the peak FLOP/s MFU will use; a C compiler and triton for compile."""
    figures = dict(torch=torch.__version__, cuda=torch.version.cuda)
    if ctx['device'] == 'cpu':
        peak, source = peak_flops('cpu', torch.float32)
        return 'PASS', f"torch {torch.__version__}, rehearsal on CPU; peak for MFU: {source}", dict(
            figures, peak_flops=peak, peak_source=source)
    if not torch.cuda.is_available():
        return 'FAIL', f"torch {torch.__version__} (cuda {torch.version.cuda}): torch.cuda.is_available() is False", \
            figures
    peak, source = peak_flops('cuda:0', torch.bfloat16)
    compiler = shutil.which('gcc') or shutil.which('cc')
    try:
        import triton  # noqa: F401
        has_triton = True
    except ImportError:
        has_triton = False
    ctx['compile'] = bool(compiler) and has_triton  # without them torch.compile cannot build kernels
    figures.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                   bf16=torch.cuda.is_bf16_supported(), peak_flops=peak, peak_source=source,
                   compiler=compiler, triton=has_triton)
    status = 'PASS' if figures['bf16'] and ctx['compile'] else 'WARN'
    return status, (f"torch {torch.__version__}, cuda {torch.version.cuda}, {figures['gpus']} x {figures['gpu']}, "
                    f"bf16 {figures['bf16']}, peak for MFU: {source}, C compiler {compiler or 'MISSING'}, triton "
                    f"{'yes' if has_triton else 'MISSING (no compile)'}"), figures


def _write_tokens(folder: Path, ids: np.ndarray, vocab: int) -> None:
    import pickle
    folder.mkdir(parents=True, exist_ok=True)
    n = len(ids) * 9 // 10
    ids[:n].astype(np.uint16).tofile(folder / 'train.bin')
    ids[n:].astype(np.uint16).tofile(folder / 'val.bin')
    with open(folder / 'meta.pkl', 'wb') as f:
        pickle.dump({'vocab_size': vocab}, f)  # nanoGPT's layout: train.py reads it as is


def check_data(ctx: dict, limit: float):
    """Datasets in the scratch folder: this repository's bytes (a real-text parity set), random GPT-2 and
    GPT-SW3 tokens (MFU: the data's values do not change the step's cost)."""
    root = Path(ctx['work']) / 'data'
    text = b''.join(p.read_bytes() for p in sorted(ROOT.glob('*.md')) + sorted(ROOT.glob('*.py')))
    _write_tokens(root / 'text', np.frombuffer(text, dtype=np.uint8), 256)
    g = np.random.default_rng(0)
    n = DATA_TOKENS[ctx['shape_index']]
    _write_tokens(root / 'gpt2', g.integers(0, 50257, n), 50257)
    _write_tokens(root / 'sw3', g.integers(0, 64000, n), 64000)
    return 'PASS', f"text ({len(text):,} bytes), gpt2 and sw3 ({n:,} random tokens each)", dict(text_bytes=len(text))


@contextmanager
def _no_host_sync(device: str):
    """On CUDA torch.cuda.set_sync_debug_mode('error'): any host-device sync raises. On CPU (no syncs exist) the
    stand-in: every host read of a tensor value (.item(), bool(), .tolist(), int(), nonzero, .cpu()) raises."""
    if device != 'cpu':
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(0)
        return
    names = ('item', 'tolist', '__bool__', '__float__', '__int__', 'nonzero', 'cpu')
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name):
        def read(*a, **kw):
            raise RuntimeError(f"host read of a tensor value (Tensor.{name}) in the step")
        return read
    for n in names:
        setattr(torch.Tensor, n, refuse(n))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


def _one_step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, dtype: torch.dtype) -> None:
    """train.py's step, its device-side parts: forward with the fused CE/z-loss/mu-loss, backward, clipping, the
    finite flag, the guarded optimizer step and mu-centering."""
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype == torch.bfloat16):
        loss, _ = model(x, targets=x, z_loss=1e-4, mu_loss=1e-4)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
    ok = torch.isfinite(torch.stack([loss.detach().float(), norm.float()])).all()
    optim.guarded_step(opt, ok)
    optim.mu_centering_where_(model.output_embedding(), ok)


def check_syncs(ctx: dict, limit: float):
    """No host-device sync in the training step, with Coupled Adam (device-side skip) and with fused AdamW (CUDA;
    on CPU AdamW is not fused and reads its flag back, so only Coupled Adam is checked there)."""
    device = 'cuda' if ctx['device'] != 'cpu' else 'cpu'
    dtype = torch.bfloat16 if device == 'cuda' else torch.float32
    x = torch.randint(0, 64, (2, 16), device=device)
    optimizers = ['coupled_adam'] + (['adamw'] if device == 'cuda' else [])
    for name in optimizers:
        torch.manual_seed(0)
        model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16,
                              tie_embeddings=False)).to(device)
        opt = optim.configure_optimizer(model, name, device_type=device)
        _one_step(model, opt, x, dtype)  # warm-up: lazy state and kernels outside the checked step
        try:
            with _no_host_sync(device):
                _one_step(model, opt, x, dtype)
                x_chat = torch.where(x > 32, x, IGNORE_INDEX)  # chat-like targets, ignored positions included
                with torch.autocast(device, dtype=dtype, enabled=dtype == torch.bfloat16):
                    loss, _ = model(x, targets=x_chat, z_loss=1e-4)
                loss.backward()
        except RuntimeError as e:
            return 'FAIL', f"{name}: {str(e).splitlines()[0][:200]}", dict(optimizer=name)
    how = 'torch.cuda.set_sync_debug_mode(error)' if device == 'cuda' else 'host reads refused (CPU stand-in)'
    return 'PASS', f"no host-device sync in the step ({', '.join(optimizers)}; {how})", dict(optimizers=optimizers)


def check_parity(ctx: dict, limit: float):
    """GPU vs CPU: per-step training losses of 6 fp32 steps (TF32 off) agree to 1e-4, base model and every
    paper feature (RoPE, SwiGLU, qk-norm, GQA, soft-cap, z-/mu-loss, mu-centering, Coupled Adam, DyISRU)."""
    small = TINY_SMALL if ctx['shape_index'] else SMALL
    specs = {}
    for tag, extra in (('base', {}), ('feat', FEATURES)):
        specs[f'cpu_{tag}'] = (dict(small, dataset='text', device='cpu', **extra), 0)
        specs[f'dev_{tag}'] = (dict(small, dataset='text', device=ctx['device'], **extra), 0)
    rcs = run_all(ctx, specs, limit)
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}
    out = {tag: compare_losses(ctx, f'dev_{tag}', f'cpu_{tag}', 1e-4) for tag in ('base', 'feat')}
    ok = all(o[0] for o in out.values())
    return ('PASS' if ok else 'FAIL'), '; '.join(f"{tag}: max rel loss diff {d:.2e} over {n} steps (tol 1e-4)"
                                                 for tag, (_, d, n) in out.items()), \
        {f'max_rel_diff_{tag}': d for tag, (_, d, _) in out.items()}


def check_dist_1rank(ctx: dict, limit: float):
    """torchrun on 1 rank: DDP and FSDP2 (fp32) give the plain run's losses; an FSDP2 sharded (DCP) checkpoint of
    step 3 resumed in one process continues like the uninterrupted run."""
    small = TINY_SMALL if ctx['shape_index'] else SMALL
    dist = dict(small, dataset='text', device=ctx['device'], gradient_accumulation_steps=4, mu_loss=1e-2,
                mu_centering=True, eval_interval=3, keep_last_k=3)
    specs = {'one': (dict(dist), 0), 'ddp': (dict(dist, parallelism='ddp'), 1),
             'fsdp': (dict(dist, parallelism='fsdp'), 1),
             'fsdp_dcp': (dict(dist, parallelism='fsdp', checkpoint_format='dcp'), 1)}
    t0 = time.time()
    rcs = run_all(ctx, specs, limit)
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}
    runs = Path(ctx['work']) / 'runs'
    resume = runs / 'dcp_resume'
    resume.mkdir()
    shutil.copy(runs / 'fsdp_dcp' / 'ckpt_0000003.pt', resume / 'ckpt.pt')
    shutil.copytree(runs / 'fsdp_dcp' / 'ckpt_0000003.dcp', resume / 'ckpt_0000003.dcp')
    rcs = run_all(ctx, {'dcp_resume': (dict(dist, checkpoint_format='dcp', init_from='resume'), 0)},
                  limit - (time.time() - t0))
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}
    out = {'ddp': compare_losses(ctx, 'ddp', 'one', 1e-4), 'fsdp': compare_losses(ctx, 'fsdp', 'one', 1e-4),
           'dcp_resume': compare_losses(ctx, 'dcp_resume', 'fsdp_dcp', 1e-4)}
    ok = all(o[0] and o[2] > 0 for o in out.values())
    return ('PASS' if ok else 'FAIL'), '; '.join(f"{k}: max rel loss diff {d:.2e} over {n} steps"
                                                 for k, (_, d, n) in out.items()), \
        {f'max_rel_diff_{k}': d for k, (_, d, _) in out.items()}


def _mfu(ctx: dict, name: str, limit: float):
    """train.py with bf16 autocast + compile at a real shape: median tokens/s and MFU of the log intervals after
    the first two (compile, warm-up); logged points read the loss back, so they are synchronised."""
    shape = SHAPES[name][ctx['shape_index']]
    args = dict(MFU, device=ctx['device'], compile=ctx['compile'], **shape)
    if ctx['shape_index']:
        args['dtype'] = 'float32'  # CPU rehearsal: bf16 matmuls are slow on most CPUs
    rcs = run_all(ctx, {name: (args, 0)}, limit)
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}
    run = Path(ctx['work']) / 'runs' / name
    logs = [r for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines()) if 'loss' in r][2:]
    cfg = json.loads((run / 'config.json').read_text())
    if not logs:
        return 'FAIL', f"{name}: fewer than 3 log records", {}
    mfus = [r['mfu'] for r in logs if 'mfu' in r]  # none on CPU: no honest CPU peak (mfu.py)
    figures = dict(mfu=statistics.median(mfus) if mfus else None,
                   tokens_per_sec=statistics.median(r['tokens_per_sec'] for r in logs),
                   params=cfg['num_params'], tokens_per_step=cfg['tokens_per_step'],
                   peak_mem_gib=max(r['peak_mem_mb'] for r in logs) / 1024, logs=len(logs),
                   compile=cfg['compile'], dtype=cfg['dtype'], peak_source=cfg.get('peak_flops_source'))
    expected, low, high = PREDICTED_MFU[name]
    figures.update(predicted_mfu=expected, predicted_range=[low, high])
    status = 'INFO' if ctx['device'] == 'cpu' or not mfus else ('PASS' if figures['mfu'] >= low else 'WARN')
    measured = f"MFU {figures['mfu']:.1%}" if mfus else "no MFU (no honest peak on CPU)"
    return status, (f"{measured} (predicted {expected:.0%}, {low:.0%}-{high:.0%}: "
                    f"docs/benchmarks.md), "
                    f"{figures['tokens_per_sec']:,.0f} tokens/s, {figures['params'] / 1e6:.0f}M params, "
                    f"{figures['tokens_per_step']:,} tokens/step, peak {figures['peak_mem_gib']:.1f} GiB, "
                    f"{figures['logs']} logs, compile {figures['compile']}"), figures


def check_mfu_124m(ctx: dict, limit: float):
    return _mfu(ctx, 'mfu_124m', limit)


def check_mfu_356m(ctx: dict, limit: float):
    return _mfu(ctx, 'mfu_356m', limit)


def check_tf32(ctx: dict, limit: float):
    """The fp32 124M step (eager) with TF32 on (train.py's default on CUDA) vs off: tokens/s ratio (INFO)."""
    shape = SHAPES['tf32'][ctx['shape_index']]
    base = dict(MFU, **shape, dtype='float32', device=ctx['device'], compile=False)
    rcs = run_all(ctx, {'tf32_on': (dict(base, tf32=True), 0), 'tf32_off': (dict(base, tf32=False), 0)}, limit,
                  together=False)  # timed: one at a time
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}

    def tok(run):
        path = Path(ctx['work']) / 'runs' / run / 'metrics.jsonl'
        return statistics.median([r['tokens_per_sec'] for r in map(json.loads, path.read_text().splitlines())
                                  if 'loss' in r][1:] or [float('nan')])
    on, off = tok('tf32_on'), tok('tf32_off')
    return 'INFO', f"tf32 on/off {on / off:.2f}x ({on:,.0f} vs {off:,.0f} tokens/s)", dict(
        tokens_per_sec_on=on, tokens_per_sec_off=off, ratio=on / off)


def check_vs_loop(ctx: dict, limit: float):
    """bench/bench_train.py on the device: train.py's step vs the plainest loop over our GPT vs HF GPT-2."""
    shape = SHAPES['vs_loop'][ctx['shape_index']]
    args = dict(shape, device=ctx['device'], dtype='float32' if ctx['shape_index'] else 'bfloat16',
                compile=ctx['compile'], dataset='text', data_root=str(Path(ctx['work']) / 'data'), rounds=1,
                _script='bench/bench_train.py')
    rcs = run_all(ctx, {'vs_loop': (args, 0)}, limit)
    if failed_runs(ctx, rcs):
        return 'FAIL', failed_runs(ctx, rcs), {}
    log = (Path(ctx['work']) / 'runs' / 'vs_loop.log').read_text(errors='replace').splitlines()
    ratios = [' '.join(ln.split()) for ln in log if 'ours/' in ln]
    return 'INFO', '; '.join(ratios) or 'no ratio line in the log', dict(lines=ratios)


# (name, function, own timeout in seconds), in the order they run
PLAN = [('preflight', check_preflight, 60), ('data', check_data, 60), ('syncs', check_syncs, 60),
        ('parity', check_parity, 120), ('dist_1rank', check_dist_1rank, 150), ('mfu_124m', check_mfu_124m, 170),
        ('mfu_356m', check_mfu_356m, 170), ('tf32', check_tf32, 120), ('vs_loop', check_vs_loop, 170)]
MIN_S = 20  # a check needs at least this long (start-up of a Python with torch): less budget left is SKIP


def new_context(cfg: dict, work: str) -> dict:
    """The state the checks share: config, scratch folder, shape index (0 = H100, 1 = CPU rehearsal), compile."""
    Path(cfg['out']).mkdir(parents=True, exist_ok=True)
    cpu = cfg['device'] == 'cpu'
    return dict(cfg, work=work, shape_index=int(cpu), compile=not cpu, check_t0=time.time(),
                device_name='cpu' if cpu else (torch.cuda.get_device_name(0) if torch.cuda.is_available() else '?'))


def run_check(ctx: dict, name: str, fn, limit: float, left: float) -> str:
    """Run one check within min(its limit, the budget left); record it. A check that does not fit is SKIP; an
    exception in the check itself is FAIL with its message. Returns the status."""
    ctx['check_t0'] = time.time()
    if left < MIN_S:
        record(ctx, name, 'SKIP', f"budget: {left:.0f} s left of budget_s={ctx['budget_s']} (needs {MIN_S}+ s)")
        return 'SKIP'
    try:
        status, message, figures = fn(ctx, min(limit, left))
    except Exception as e:  # a bug in the check or an API change: reported, and the next check still runs
        status, message, figures = 'FAIL', f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}", {}
    record(ctx, name, status, message, **figures)
    return status


def main(argv: list[str]) -> int:
    cfg = configure(dict(DEFAULTS), argv, source=__file__)
    if cfg['device'] not in ('cuda', 'cpu'):
        sys.exit(f"gpu_check.py: device={cfg['device']!r} is not 'cuda' or 'cpu': use --device=cuda (the check) or "
                 f"--device=cpu (rehearsal)")
    names = [n for n, _, _ in PLAN]
    only = [n for n in cfg['only'].split(',') if n]
    if any(n not in names for n in only):
        sys.exit(f"gpu_check.py: only={cfg['only']!r} names an unknown check: choose from {', '.join(names)}")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix='gpu_check_') as work:
        ctx = new_context(cfg, work)
        blocked = ''  # a failed preflight or data check: every later check is SKIP, with that as the reason
        for name, fn, limit in PLAN:
            if only and name not in only and name not in ('preflight', 'data'):
                continue
            if blocked:
                ctx['check_t0'] = time.time()
                record(ctx, name, 'SKIP', f"{blocked} failed (see its line above)")
                continue
            status = run_check(ctx, name, fn, limit, cfg['budget_s'] - (time.time() - t0))
            if name in ('preflight', 'data') and status == 'FAIL':
                blocked = name
    print(f"gpu_check.py: {time.time() - t0:.0f} s; results in {cfg['out']}/results.txt and figures.jsonl")
    return 1 if blocked else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
