"""Training throughput of train.py's step vs (a) a Hugging Face GPT2LMHeadModel training step and (b) the
simplest possible PyTorch loop over our own GPT, on the same shape and batch, in this one process.

    python bench/bench_train.py                     # CPU: 6 layers / 6 heads / 384 wide / block 256 / batch 8
    python bench/bench_train.py --threads=1 --rounds=3   # steadier on a CPU shared with other jobs
    python bench/bench_train.py --device=cuda --dtype=bfloat16 --compile=True --steps=20   # bench/gpu.sh

Ours = train.py itself (run in-process with runpy on the Shakespeare dataset, which it prepares on first
use): its logged tokens_per_sec over `steps` steps with log_interval=steps, which covers the whole step (data,
forward, loss, backward, clip, the all-reduced loss/finite check, optimizer, one log) and excludes evals.
The other two time forward + CE + backward + AdamW on pre-built batches. All three use the same GPT-2-style
model (biases, GELU-tanh, tied, no dropout), the same dtype (bf16 = autocast, as train.py) and the same
compile setting, so each ratio compares like with like. Rounds alternate the three methods and each keeps its
best round, so load from other processes hurts all alike. Peak memory: CUDA max_memory_allocated, or on CPU
the process's peak RSS (VmHWM, reset before each method through /proc/self/clear_refs).
"""
import json
import math
import runpy
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
from configurator import configure  # noqa: E402
from loader import get_batch  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

device = 'cpu'
n_layer, n_head, n_embd, block_size, batch_size = 6, 6, 384, 256, 8
steps = 4  # timed steps per method and round (after the warm-up steps)
warmup = 1  # untimed steps first (compile: 3 is safer, the first steps compile forward and backward)
dtype = 'float32'  # 'float32' | 'bfloat16' (autocast) for every method
compile = False  # torch.compile every method's model
rounds = 2
threads = 0  # torch threads, 0 = torch's default; 1 is steadier on a CPU shared with other jobs
dataset = 'shakespeare'
data_root = str(ROOT / 'data')
configure(globals(), sys.argv[1:])


def _reset_peak() -> None:
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    else:
        Path('/proc/self/clear_refs').write_text('5')


def _peak_mb() -> float:
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path('/proc/self/status').read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith('VmHWM'))) / 1024


def _sync() -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def ours(out_dir: str) -> float:
    """train.py with this shape, logging every `steps` steps (so the loss is read back once per timed window, as
    in a real run): the tokens/s it logs for the last `steps` steps, after at least `warmup` warm-up steps."""
    total = steps * (1 + math.ceil(warmup / steps))
    args = dict(out_dir=out_dir, dataset=dataset, data_root=data_root, device=device, n_layer=n_layer,
                n_head=n_head, n_embd=n_embd, block_size=block_size, batch_size=batch_size, bias=True,
                mlp='gelu_tanh', dropout=0.0, max_iters=total, eval_interval=10**9, eval_iters=1,
                log_interval=steps, sample_tokens=0, warmup_iters=0, lr_decay_iters=total, dtype=dtype,
                compile=compile, vocab_multiple=1)  # the same (unpadded) vocabulary as the other two
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    old, sys.argv = sys.argv, ['train.py'] + [f'--{k}={v}' for k, v in args.items()]
    try:
        runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    finally:
        sys.argv = old
        for s, h in handlers.items():
            signal.signal(s, h)
    recs = [json.loads(ln) for ln in (Path(out_dir) / 'metrics.jsonl').read_text().splitlines()]
    return [r['tokens_per_sec'] for r in recs if 'loss' in r][-1]


def loop(model: torch.nn.Module, logits_of, batches: list) -> float:
    """The simplest training loop: forward, CE, backward, AdamW step; tokens/s over the timed steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    if compile:
        model = torch.compile(model)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16')
    for i, (x, y) in enumerate(batches):
        if i == warmup:
            _sync()
            t0 = time.perf_counter()
        with autocast:
            logits = logits_of(model, x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync()
    return (len(batches) - warmup) * batch_size * block_size / (time.perf_counter() - t0)


def main() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel
    if threads:
        torch.set_num_threads(threads)
    folder = data.prepare_dataset(dataset, data_root=data_root)
    vocab = data.load_meta(folder)['vocab_size']
    train = data.load_tokens(folder, 'train')
    gen = torch.Generator().manual_seed(0)
    batches = [get_batch(train, batch_size, block_size, gen, device) for _ in range(steps + warmup)]
    cfg = GPTConfig(vocab_size=vocab, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                    bias=True, mlp='gelu_tanh', dropout=0.0)
    hf_cfg = GPT2Config(vocab_size=vocab, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        attn_implementation='sdpa', bos_token_id=0, eos_token_id=0)
    methods = {
        'ours (train.py)': lambda tmp: ours(tmp),
        'plain loop, our GPT': lambda tmp: loop(GPT(cfg).to(device), lambda m, x: m(x), batches),
        'HF GPT2LMHeadModel': lambda tmp: loop(GPT2LMHeadModel(hf_cfg).to(device), lambda m, x: m(x).logits,
                                               batches),
    }
    best, peak = {k: 0.0 for k in methods}, {k: 0.0 for k in methods}
    for r in range(rounds):
        for name, run in methods.items():
            _reset_peak()
            with tempfile.TemporaryDirectory() as tmp:
                best[name] = max(best[name], run(tmp))
            peak[name] = max(peak[name], _peak_mb())
            print(f"round {r + 1}: {name}: {best[name]:,.0f} tokens/s (best so far)", flush=True)
    print(f"\n{n_layer} layers / {n_head} heads / {n_embd} wide / block {block_size} / batch {batch_size} / "
          f"vocab {vocab} on {device} ({torch.get_num_threads()} threads), {dtype}, compile={compile}, best of "
          f"{rounds} rounds x {steps} steps after {warmup} warm-up")
    ref = best['ours (train.py)']
    for name in methods:
        print(f"  {name:<22} {best[name]:>10,.0f} tokens/s   ours/this {ref / best[name]:5.2f}x   "
              f"peak mem {peak[name]:,.0f} MB")


if __name__ == '__main__':
    main()
