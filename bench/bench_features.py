"""
Step-time overhead of each paper feature vs the plain baseline, on the same small GPT and the same batch.

    python bench/bench_features.py                       # CPU defaults (a few minutes on 2 cores)
    python bench/bench_features.py --compile=False --repeats=5

One training step = forward + compute_loss + backward + optimizer.step (+ mu-centering). Variants run
interleaved (one timed chunk of `steps` steps per variant per repeat) and we report the median per-step time
over repeats, as a ratio to the baseline measured in the same run (targets: z-loss, mu-loss,
mu-centering <= 1.02; Coupled Adam <= 1.05 vs foreach and fused AdamW; DyT/DyISRU <= 1.10 vs LayerNorm,
compiled). Peak memory: CUDA max_memory_allocated per variant; on CPU, the peak RSS added by building the
variant and running `steps` steps, in a fresh subprocess (Linux VmHWM after resetting it through
/proc/self/clear_refs, minus the RSS after imports), since the CPU allocator keeps no statistics.
On CPU the ratios use process CPU time (time.process_time), which other jobs on a shared machine disturb
less than the wall clock; both are printed.
"""
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from configurator import configure  # noqa: E402
from losses import compute_loss  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from optim import configure_optimizer, mu_centering_  # noqa: E402

# model (small; the vocabulary/width ratio decides the z-loss and mu-loss cost, as in the OEC 16M model)
vocab_size = 8192
n_layer = 4
n_head = 4
n_embd = 128
block_size = 64
batch_size = 8
tie_embeddings = True  # Coupled Adam couples the tied wte = lm_head, as in the paper
# benchmark
repeats = 7  # interleaved rounds; the median over rounds is reported
steps = 3  # timed steps per variant per round
compile = True  # also time LayerNorm / DyT / DyISRU under torch.compile (reported as failed if it fails)
device = 'cuda' if torch.cuda.is_available() else 'cpu'
memory = True  # CPU: peak RSS of one subprocess per variant (adds ~5 s per variant)
only = ''  # internal: run a single variant for `steps` steps and print its peak memory
threads = 0  # torch.set_num_threads (0 = torch default)
config = configure(globals(), sys.argv[1:])

VARIANTS = {  # name -> (model overrides, optimizer, loss kwargs, mu-centering, compiled)
    'baseline': ({}, 'adamw', {}, False, False),
    'z_loss': ({}, 'adamw', dict(z_loss=1e-4), False, False),
    'mu_loss': ({}, 'adamw', dict(mu_loss=1e-4), False, False),
    'mu_centering': ({}, 'adamw', {}, True, False),
    'adamw_fused': ({}, 'adamw_fused', {}, False, False),
    'coupled_adam': ({}, 'coupled_adam', {}, False, False),
    'dyt': (dict(norm='dyt'), 'adamw', {}, False, False),
    'dyisru': (dict(norm='dyisru'), 'adamw', {}, False, False),
}
if compile:
    VARIANTS.update({f'{n}+compile': (dict(norm=n), 'adamw', {}, False, True) for n in ('layernorm', 'dyt', 'dyisru')})
RATIOS = [  # (variant, baseline, target)
    ('z_loss', 'baseline', 1.02), ('mu_loss', 'baseline', 1.02), ('mu_centering', 'baseline', 1.02),
    ('coupled_adam', 'baseline', 1.05), ('coupled_adam', 'adamw_fused', 1.05),
    ('dyt', 'baseline', 1.10), ('dyisru', 'baseline', 1.10),
    ('dyt+compile', 'layernorm+compile', 1.10), ('dyisru+compile', 'layernorm+compile', 1.10),
]


def build(name: str):
    """A fresh model (same init), optimizer and one-step closure for a variant."""
    overrides, opt_name, loss_kw, centering, compiled = VARIANTS[name]
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                    bias=False, tie_embeddings=tie_embeddings, **overrides)
    model = GPT(cfg).to(device)
    opt = configure_optimizer(model, 'adamw' if opt_name == 'adamw_fused' else opt_name, learning_rate=1e-4,
                              weight_decay=0.1, betas=(0.9, 0.95), device_type=device)
    if opt_name == 'adamw_fused':
        groups = [dict(params=g['params'], weight_decay=g['weight_decay']) for g in opt.param_groups]
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)
    fwd = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab_size, (batch_size, block_size), generator=g).to(device)
    y = torch.randint(0, vocab_size, (batch_size, block_size), generator=g).to(device)
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if device == 'cuda' else torch.autocast('cpu', enabled=False)

    def step():
        with ctx:
            logits = fwd(x)
        loss, _ = compute_loss(logits, y, model.output_embedding(), **loss_kw)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if centering:
            mu_centering_(model.output_embedding())
    return step


def sync():
    if device == 'cuda':
        torch.cuda.synchronize()


def peak_memory_mb(name: str) -> float:
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        step = build(name)
        for _ in range(steps):
            step()
        sync()
        return torch.cuda.max_memory_allocated() / 2**20
    out = subprocess.run([sys.executable, __file__, f'--only={name}', f'--steps={steps}', f'--compile={compile}',
                          f'--threads={threads}'], capture_output=True, text=True, env=dict(os.environ))
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float('nan')


def _rss_mb(field: str) -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _variant_peak_rss_mb(name: str) -> float:
    """Peak RSS during build + `steps` steps minus the RSS before, after imports. Linux: writing 5 to
    /proc/self/clear_refs resets the high-water mark VmHWM, so the import-time peak (torch's libraries) does
    not hide the variant's own peak; elsewhere fall back to ru_maxrss (peak of the whole process)."""
    try:
        Path('/proc/self/clear_refs').write_text('5')
        before = _rss_mb('VmRSS')
    except OSError:
        before = None
    step = build(name)
    for _ in range(steps):
        step()
    if before is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return _rss_mb('VmHWM') - before


def time_isolated() -> dict[str, float]:
    """Median time (s) of just the pieces a feature adds or swaps, on the baseline model's shapes: on a shared CPU
    the step-level ratios carry several % of noise, these small interleaved timings do not.
    Loss rows are forward + backward on fixed (B*T, V) logits; optimizer rows are one step()."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                          block_size=block_size, bias=False, tie_embeddings=tie_embeddings)).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    kw = dict(learning_rate=1e-4, weight_decay=0.1, betas=(0.9, 0.95), device_type=device)
    opts = {'adamw (configure_optimizer)': configure_optimizer(model, 'adamw', **kw),
            'coupled_adam': configure_optimizer(model, 'coupled_adam', **kw)}
    groups = [dict(params=g['params'], weight_decay=g['weight_decay']) for g in opts['coupled_adam'].param_groups]
    opts['adamw foreach'] = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), foreach=True)
    opts['adamw fused'] = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=True)
    logits = torch.randn(batch_size * block_size, vocab_size, device=device, requires_grad=True)
    y = torch.randint(0, vocab_size, (batch_size * block_size,), device=device)
    W = model.output_embedding()

    def loss_fn(**lam):
        def run():
            loss, _ = compute_loss(logits, y, W, **lam)
            loss.backward()
        return run
    pieces = {'loss: F.cross_entropy (reference)': lambda: F.cross_entropy(logits, y).backward(),
              'loss: ce': loss_fn(), 'loss: ce + z_loss': loss_fn(z_loss=1e-4),
              'loss: ce + mu_loss': loss_fn(mu_loss=1e-4), 'mu_centering_': lambda: mu_centering_(W)}
    pieces.update({f'step: {k}': opt.step for k, opt in opts.items()})
    clock = time.process_time if device == 'cpu' else time.perf_counter
    ts = {k: [] for k in pieces}
    for _ in range(12):
        for k, fn in pieces.items():
            for _ in range(3):  # back to back: the data are in cache, as right after the lm_head in a step
                logits.grad = None
                sync()
                t0 = clock()
                fn()
                sync()
                ts[k].append(clock() - t0)
    return {k: statistics.median(v[6:]) for k, v in ts.items()}  # the first rounds are warm-up


def main() -> None:
    if threads:
        torch.set_num_threads(threads)
    if only:  # subprocess mode: build, run, print the peak RSS in MiB added by this variant
        print(_variant_peak_rss_mb(only))
        return
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} model: L={n_layer} "
          f"H={n_embd} heads={n_head} V={vocab_size} B={batch_size} T={block_size} tied={tie_embeddings} "
          f"repeats={repeats} steps={steps}")
    steppers, failed = {}, {}
    for name in VARIANTS:
        try:
            steppers[name] = build(name)
            for _ in range(2):  # warm-up (and compilation)
                steppers[name]()
        except Exception as e:  # compile may fail on a machine without a working C++ toolchain
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            steppers.pop(name, None)
    wall, cpu = {name: [] for name in steppers}, {name: [] for name in steppers}
    for _ in range(repeats):
        for name, step in steppers.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                step()
            sync()
            wall[name].append((time.perf_counter() - t0) / steps)
            cpu[name].append((time.process_time() - c0) / steps)
    # on a shared CPU the process CPU time is less disturbed by other jobs than the wall clock: ratios use it
    use_cpu = device == 'cpu'
    med = {name: statistics.median((cpu if use_cpu else wall)[name]) for name in steppers}
    mem_kind = 'CUDA max_memory_allocated' if device == 'cuda' else 'peak RSS added, fresh subprocess (VmHWM)'
    mem = {name: peak_memory_mb(name) for name in steppers} if memory else {}
    print(f"\n{'variant':<20} {'wall ms':>8} {'cpu ms':>8} {'wall min..max':>15} {'peak MiB':>9}   ({mem_kind})")
    for name in steppers:
        peak = f"{mem[name]:9.0f}" if name in mem else f"{'-':>9}"
        w = wall[name]
        print(f"{name:<20} {1e3 * statistics.median(w):8.1f} {1e3 * statistics.median(cpu[name]):8.1f} "
              f"{1e3 * min(w):7.1f}..{1e3 * max(w):<7.1f} {peak}")
    for name, why in failed.items():
        print(f"{name:<20} FAILED: {why}")
    print(f"\n{'ratio of median ' + ('CPU' if use_cpu else 'wall') + ' time per step':<40} {'value':>7} {'target':>7}")
    for a, b, target in RATIOS:
        if a in med and b in med:
            r = med[a] / med[b]
            print(f"{a + ' / ' + b:<40} {r:7.3f} {'<=' + str(target):>7} {'ok' if r <= target else 'OVER'}")
    iso = time_isolated()
    print(f"\n{'isolated cost (median of 30)':<36} {'ms':>7} {'% of baseline step':>19}")
    for k, t in iso.items():
        print(f"{k:<36} {1e3 * t:7.2f} {100 * t / med['baseline']:18.2f}%")
    added = dict(z_loss=iso['loss: ce + z_loss'] - iso['loss: ce'], mu_loss=iso['loss: ce + mu_loss'] - iso['loss: ce'],
                 mu_centering=iso['mu_centering_'],
                 coupled_vs_foreach=iso['step: coupled_adam'] - iso['step: adamw foreach'],
                 coupled_vs_fused=iso['step: coupled_adam'] - iso['step: adamw fused'])
    print("overhead from isolated costs, % of the baseline step: "
          + ", ".join(f"{k} {100 * v / med['baseline']:+.2f}%" for k, v in added.items()))

if __name__ == '__main__':
    main()
