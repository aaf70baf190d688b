"""
The pretraining loop: one process (CPU or GPU), DDP or FSDP2 under torchrun. nanoGPT's train.py, plus
the paper flags (norms, z-/mu-loss, mu-centering, Coupled Adam), exact resume and fault handling.

    python train.py                                          # tiny GPT on Shakespeare, a few CPU minutes
    python train.py config/oec_16m.py --learning_rate=3e-2   # a config file, then overrides
    python train.py --out_dir=out --init_from=resume         # continue exactly from out/ckpt.pt
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py --parallelism=fsdp

Run folder (out_dir): config.json, metrics.jsonl, ckpt.pt (newest) + ckpt_<step>.pt (last keep_last_k),
summary.json. A checkpoint is a dict of tensors and plain Python values (torch.load(weights_only=True)):
model and optimizer as full state dicts keyed by parameter name (the same for none/ddp/fsdp, so a run can
resume on another world size), step, data-loader position, RNG states, config and model_args.
"""
import dataclasses
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import data
import losses
import optim
from configurator import configure
from model import GPT, GPTConfig, device_peak_flops
from model import PRESETS as _PRESETS  # (a dict: imported privately so it is no config key)

# -----------------------------------------------------------------------------
# default config values: a tiny GPT on Shakespeare that trains in a few CPU minutes
# I/O
out_dir = 'out'
eval_interval = 100  # steps between evaluations (and checkpoints)
log_interval = 10  # steps between log lines (console + metrics.jsonl)
eval_iters = 10  # batches per loss estimate
eval_only = False  # evaluate the initial model once and exit
always_save_checkpoint = True  # save at every eval; False = only when val loss improves (nanoGPT)
keep_last_k = 2  # ckpt_<step>.pt files kept; ckpt.pt is always the newest
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir/ckpt.pt) | 'gpt2-hf:<HF GPT2 folder>' | 'finetune'
finetune_from = ''  # init_from='finetune': out_dir of the pretraining run whose ckpt.pt gives the weights
finetune_data = ''  # init_from='finetune': chat JSONL, {"messages": [{"role": "user"|"assistant", ...}]}
finetune_val_data = ''  # init_from='finetune': chat JSONL for val_loss; '' = the training conversations
sample_tokens = 200  # tokens sampled and printed at the end (0 = no sample)
wandb_log = False  # log to Weights & Biases (needs `pip install wandb`)
wandb_project = 'nanogpt'
wandb_run_name = 'run'
# data
dataset = 'shakespeare'  # folder data_root/<dataset>; prepared on first use when data.py knows the name
data_root = 'data'
tokenizer = ''  # '' = the prepared folder's (new folders: data.py trains a BPE) | 'gpt2' | 'cl100k_base' | x.model
gradient_accumulation_steps = 1  # micro-steps per step over ALL ranks (nanoGPT: divided by world size)
batch_size = 16  # micro-batch size per rank, in sequences
block_size = 128  # context length in tokens
# model (model_preset sets all of these; a key you set explicitly overrides the preset)
model_preset = ''  # a model.PRESETS name: 'gpt2', 'gpt-sw3-356m', 'oec-16m', ...; '' = the keys below
n_layer = 4
n_head = 4
n_kv_head = None  # None = n_head (multi-head); fewer = grouped-query attention
n_embd = 128
dropout = 0.0  # for pretraining 0 is good, for finetuning try 0.1+
bias = False  # bias in Linear layers and LayerNorm
norm = 'layernorm'  # 'layernorm' | 'rmsnorm' | 'dyt' | 'dyisru' | 'dyt_sp' | 'dyisru_sp'
norm_alpha0 = 0.5  # DyT alpha0 (DyISRU beta0 = 1/alpha0^2)
norm_alpha0_attn = None  # init of the post-attention norm ln_2; None = norm_alpha0
norm_init = None  # DyT/DyISRU raw alpha/beta at init, as the DyISRU code's init_alpha/init_beta (replaces alpha0)
norm_init_attn = None  # the same for ln_2; None = norm_init
pos = 'learned'  # 'learned' | 'rope'
mlp = 'gelu'  # 'gelu' | 'swiglu'
qk_norm = False  # normalise q and k per head (qk-LayerNorm)
tie_embeddings = True  # output embedding = input embedding (GPT-2)
init = 'normal'  # 'normal' (GPT-2, N(0, 0.02)) | 'xavier' (OEC)
logit_softcap = None  # c in c*tanh(logits/c) (OEC v2 uses 30); None = off
vocab_multiple = 1  # pad the model's vocabulary up to a multiple of this (64 is faster on GPU)
# losses (OEC paper, ../shared/papers/oec.md)
z_loss = 0.0  # lambda of the z-loss, mean (log Z)^2 (OEC §1.6; 1e-4 in the paper)
mu_loss = 0.0  # lambda of the mu-loss, ||mean of output-embedding rows||^2 (OEC §1.5; 1e-4)
mu_centering = False  # subtract the row mean from the output embedding after every step (OEC §1.4)
# optimizer
optimizer = 'adamw'  # 'adamw' | 'coupled_adam' (Coupled Adam on one embedding matrix)
coupled_adam_embedding = 'output'  # coupled matrix: 'output' (lm_head) | 'input' (wte); tied: the same matrix
learning_rate = 2e-3  # max learning rate
max_iters = 500  # total optimizer steps
weight_decay = 0.1
decay_token_embedding = True  # nanoGPT decays every >=2-D weight; False: not wte (Coupled Adam code's embdecay)
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # clip gradients at this norm, 0 = off (the norm is logged either way)
coupled_adam_avg_scale = 1.0  # Coupled Adam: scale of the averaged second moment
# learning rate schedule
decay_lr = True  # nanoGPT key: False = constant learning_rate (same as schedule='constant')
schedule = 'cosine'  # 'cosine' | 'wsd' | 'constant'; all with linear warmup
warmup_iters = 30  # steps of linear warmup
lr_decay_iters = 500  # cosine: steps until min_lr (~ max_iters per Chinchilla)
min_lr = 2e-4  # ~ learning_rate/10 per Chinchilla
wsd_decay_frac = 0.2  # wsd: fraction of max_iters spent decaying at the end
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu' | 'cuda' | 'cuda:1' ...
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # or bf16
compile = False  # torch.compile the model (PyTorch 2)
parallelism = 'none'  # 'none' | 'ddp' | 'fsdp' (FSDP2 fully_shard per block); ddp/fsdp need torchrun
activation_checkpointing = False  # recompute each block's activations in backward (less memory)
init_device = ''  # '' = build the model on `device`; 'meta' = build on meta, shard, then materialise
seed = 1337
skip_nonfinite = False  # on a NaN/inf loss or grad norm: skip the batch (counted) instead of stopping
inject_nonfinite_at_step = -1  # debug/tests: multiply the loss of step N (1-based, as logged) by inf
debug_ckpt_sleep = 0.0  # debug/tests: seconds between writing the temp checkpoint and renaming it
# -----------------------------------------------------------------------------
_defaults = {k: v for k, v in globals().items()
             if not k.startswith('_') and isinstance(v, (int, float, bool, str, type(None)))}
config = configure(globals(), sys.argv[1:])
_t_start = time.time()
_MODEL_KEYS = [f.name for f in dataclasses.fields(GPTConfig) if f.name != 'vocab_size']


def _fail(msg: str) -> None:
    """Stop before any work with one clear message (every rank raises it, so torchrun exits cleanly)."""
    raise SystemExit(f"train.py: {msg}")


def _validate(cfg: dict, world_size: int) -> None:
    """Every check that needs no data or model, before any work (Modalities-style fail fast)."""
    choices = dict(parallelism=('none', 'ddp', 'fsdp'), optimizer=('adamw', 'coupled_adam'),
                   coupled_adam_embedding=('output', 'input'),
                   schedule=('cosine', 'wsd', 'constant'), dtype=('float32', 'bfloat16'),
                   init_device=('', 'meta'))
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            hint = (" (float16 needs a loss scaler, which this loop does not have: use bfloat16)"
                    if cfg[key] == 'float16' else "")
            _fail(f"{key}={cfg[key]!r} is not one of {allowed}{hint}: fix --{key}")
    for key in ('z_loss', 'mu_loss', 'weight_decay', 'grad_clip', 'learning_rate', 'min_lr', 'dropout'):
        if cfg[key] < 0:
            _fail(f"{key}={cfg[key]} is negative: use 0 (off) or a positive value")
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval',
                'eval_iters', 'keep_last_k'):
        if cfg[key] < 1:
            _fail(f"{key}={cfg[key]} must be >= 1")
    if cfg['logit_softcap'] is not None and cfg['logit_softcap'] <= 0:
        _fail(f"logit_softcap={cfg['logit_softcap']} must be > 0 (OEC v2 uses 30) or None (off)")
    if cfg['model_preset'] and cfg['model_preset'] not in _PRESETS:
        _fail(f"model_preset={cfg['model_preset']!r} is unknown: use one of {sorted(_PRESETS)}")
    if not (cfg['init_from'] in ('scratch', 'resume', 'finetune') or cfg['init_from'].startswith('gpt2-hf:')):
        _fail(f"init_from={cfg['init_from']!r}: use 'scratch', 'resume', 'finetune' or 'gpt2-hf:<folder>' "
              f"(a local Hugging Face GPT2LMHeadModel folder; nothing is downloaded)")
    if cfg['init_from'] == 'finetune' and not (cfg['finetune_from'] and cfg['finetune_data']):
        _fail("init_from='finetune' needs --finetune_from=<pretraining out_dir> and "
              "--finetune_data=<chat.jsonl>")
    if cfg['init_from'] == 'finetune' and not Path(cfg['finetune_data']).is_file():
        _fail(f"finetune_data={cfg['finetune_data']!r} not found")
    if cfg['init_from'] == 'resume' and not (Path(cfg['out_dir']) / 'ckpt.pt').is_file():
        _fail(f"init_from='resume' but {cfg['out_dir']}/ckpt.pt does not exist: check --out_dir or use "
              f"init_from='scratch'")
    if cfg['device'].startswith('cuda') and not torch.cuda.is_available():
        _fail(f"device={cfg['device']!r} but CUDA is not available: use --device=cpu")
    in_torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    if cfg['parallelism'] != 'none' and not in_torchrun:
        _fail(f"parallelism={cfg['parallelism']!r} needs torchrun's environment (RANK, WORLD_SIZE): launch "
              f"with `torchrun --nproc_per_node=N train.py ...`, or use --parallelism=none for one process")
    if cfg['parallelism'] == 'none' and in_torchrun and world_size > 1:
        _fail(f"torchrun started {world_size} processes but parallelism='none': add --parallelism=ddp or "
              f"--parallelism=fsdp")
    if cfg['gradient_accumulation_steps'] % world_size:
        _fail(f"gradient_accumulation_steps={cfg['gradient_accumulation_steps']} is the global number of "
              f"micro-steps (nanoGPT meaning) and must be divisible by the world size {world_size}: global "
              f"batch = gradient_accumulation_steps x batch_size must split evenly over ranks x micro batch; "
              f"use a multiple of {world_size}")


def _model_args(cfg: dict, vocab_size: int) -> dict:
    """GPTConfig kwargs: the preset (if any), then every model key whose value differs from the default."""
    args = dict(_PRESETS[cfg['model_preset']]) if cfg['model_preset'] else {}
    for k in _MODEL_KEYS:
        if not cfg['model_preset'] or cfg[k] != _defaults[k] or k not in args:
            args[k] = cfg[k]
    args.pop('vocab_size', None)
    return dict(args, vocab_size=math.ceil(vocab_size / cfg['vocab_multiple']) * cfg['vocab_multiple'])


def _git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'


def _rng_state() -> dict:
    np_state = np.random.get_state()  # ('MT19937', keys uint32 (624,), pos, has_gauss, cached_gaussian)
    return {'torch': torch.get_rng_state(),
            'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            'python': random.getstate(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s['torch'])
    np.random.set_state((s['numpy'][0], s['numpy'][1].numpy().astype(np.uint32), *s['numpy'][2:]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in s['python']))
    if s['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s['cuda'])


def save_checkpoint(ckpt: dict, run_dir: Path, step: int) -> Path:
    """Atomic: write ckpt_<step>.pt.tmp and fsync it, rename it to ckpt_<step>.pt, then hard-link that as
    ckpt.pt (again via a temp name + rename) and drop all but the newest keep_last_k step files. A kill at any
    moment leaves the previous ckpt.pt complete and loadable."""
    for stale in run_dir.glob('ckpt*.pt.tmp'):  # left by a write that was killed
        stale.unlink()
    path = run_dir / f'ckpt_{step:07d}.pt'
    tmp = run_dir / f'ckpt_{step:07d}.pt.tmp'
    with open(tmp, 'wb') as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    time.sleep(debug_ckpt_sleep)  # fault tests kill -9 the process here
    os.replace(tmp, path)
    latest_tmp = run_dir / 'ckpt.pt.tmp'
    os.link(path, latest_tmp)
    os.replace(latest_tmp, run_dir / 'ckpt.pt')
    dir_fd = os.open(run_dir, os.O_RDONLY)
    os.fsync(dir_fd)  # make the renames durable
    os.close(dir_fd)
    for old in sorted(run_dir.glob('ckpt_*.pt'))[:-keep_last_k]:
        old.unlink()
    return path


def fixed_batches(split_data) -> callable:
    """Random windows of split_data, the same ones at every eval (own seeded generator: the training RNG is
    untouched), identical on every rank."""
    gen = torch.Generator().manual_seed(seed + 7)
    return lambda: data.get_batch(split_data, batch_size, block_size, gen, device)


@torch.no_grad()
def estimate_loss(next_batch: callable, n_batches: int, diagnostics: int = 0) -> tuple[float, dict]:
    """Mean CE over n_batches batches, split over the ranks (every rank draws every batch and keeps its share)
    and all-reduced; plus the logit diagnostics (OEC §1.9) over the first `diagnostics` batches of each
    rank."""
    model.eval()
    n_batches = math.ceil(n_batches / world_size) * world_size  # every rank runs the same number of forwards
    diagnostics = min(diagnostics, n_batches // world_size)
    ce_sum, diag = 0.0, {}
    for k in range(n_batches):
        x, y = next_batch()
        if k % world_size != rank:
            continue
        with autocast:
            logits = model(x)
            ce_sum += losses.cross_entropy(logits, y).item()
        if k < diagnostics * world_size:
            for key, v in losses.logit_diagnostics(logits, y).items():
                diag[key] = diag.get(key, 0.0) + v / (diagnostics * world_size)
    keys = sorted(diag)
    stats = torch.tensor([ce_sum / n_batches] + [diag[k] for k in keys], device=device)
    if world_size > 1:
        dist.all_reduce(stats)  # sum over ranks = mean over all batches
    model.train()
    stats = stats.tolist()
    return stats[0], dict(zip(keys, stats[1:]))


def evaluate() -> dict:
    """The eval record: train/val loss, per-language val loss and bits per byte (val_<lang>.bin), the logit
    diagnostics on a few val batches and the output-embedding geometry (OEC §1.9, Coupled Adam §2.4).
    Fine-tuning: train/val loss on chat batches (assistant tokens only), pretrain_val_loss on val.bin."""
    rec, n_diag = {}, min(4, eval_iters)
    if init_from == 'finetune':
        def chat_batches(conversations: list) -> callable:
            fixed = data.ChatLoader(conversations, tok, batch_size, block_size, seed=seed + 7, device=device)
            return fixed.next_batch
        rec['train_loss'], _ = estimate_loss(chat_batches(chats), eval_iters)
        rec['val_loss'], rec_diag = estimate_loss(chat_batches(val_chats), eval_iters, n_diag)
        rec['pretrain_val_loss'], _ = estimate_loss(fixed_batches(val_data), eval_iters)
    else:
        rec['train_loss'], _ = estimate_loss(fixed_batches(train_data), eval_iters)
        rec['val_loss'], rec_diag = estimate_loss(fixed_batches(val_data), eval_iters, n_diag)
    for lang, (lang_data, tokens_per_byte) in val_langs.items():
        rec[f'val_loss/{lang}'], _ = estimate_loss(fixed_batches(lang_data), eval_iters)
        if tokens_per_byte:  # bits per byte = nats/token / ln 2 * tokens/byte: comparable across tokenizers
            rec[f'val_bpb/{lang}'] = rec[f'val_loss/{lang}'] / math.log(2) * tokens_per_byte
    weight = raw_model.output_embedding()
    if hasattr(weight, 'full_tensor'):  # FSDP2 DTensor shard -> the whole (V, H) matrix (a collective)
        weight = weight.full_tensor()
    if master:
        rec.update(rec_diag)
        rec.update(losses.embedding_diagnostics(weight, log_unigram))
    return rec


def checkpoint_state() -> dict | None:
    """The checkpoint dict (on rank 0; None elsewhere). Under FSDP2 the full state dicts are gathered to rank
    0's CPU (a collective every rank joins); keyed by parameter name, so tied weights and another world size
    load back (Modalities #348/#381)."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True) if world_size > 1 else StateDictOptions()
    model_sd = get_model_state_dict(raw_model, options=opts)
    optim_sd = get_optimizer_state_dict(raw_model, opt, options=opts)
    rng = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(rng, _rng_state())
    else:
        rng = [_rng_state()]
    if not master:
        return None
    bad = [k for k, v in model_sd.items() if not torch.isfinite(v).all()]
    if bad:  # never overwrite a good checkpoint with a broken one
        raise SystemExit(f"train.py: refusing to checkpoint non-finite weights ({bad[:3]}) at step "
                         f"{iter_num}; last good checkpoint: {run_dir / 'ckpt.pt'}")
    return {'model': {k: v.cpu() for k, v in model_sd.items()}, 'optimizer': optim_sd, 'step': iter_num,
            'schedule': {'name': schedule if decay_lr else 'constant', 'step': iter_num, 'lr': _lr(iter_num)},
            'tokens': tokens_seen, 'best_val_loss': best_val_loss, 'nonfinite_skipped': nonfinite_skipped,
            'wall_time_s': wall_time(), 'loader': loader.state_dict(), 'rng': rng, 'world_size': world_size,
            'config': config, 'model_args': model_args}


def save(reason: str) -> None:
    global last_ckpt
    ckpt = checkpoint_state()
    if master:
        last_ckpt = save_checkpoint(ckpt, run_dir, iter_num)
        tqdm.write(f"step {iter_num}: saved {run_dir / 'ckpt.pt'} ({reason})")


def _lr(it: int) -> float:
    return optim.get_lr(it, schedule if decay_lr else 'constant', learning_rate, min_lr, warmup_iters,
                        lr_decay_iters, max_iters, wsd_decay_frac)


def _clean(rec: dict) -> dict:
    """JSON-safe: non-finite floats become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def log_metrics(rec: dict) -> None:
    if master:
        with open(run_dir / 'metrics.jsonl', 'a') as f:
            f.write(json.dumps(_clean(rec)) + '\n')
        if wandb_log:
            wandb.log(_clean(rec), step=rec['step'])


def write_summary(finished: bool, diverged: bool) -> None:
    if master:
        final = {k: v for k, v in last_eval.items() if k not in ('step', 'tokens', 'train_loss', 'val_loss')}
        summary = dict(finished=finished, diverged=diverged, final_train_loss=last_eval.get('train_loss'),
                       final_val_loss=last_eval.get('val_loss'), best_val_loss=best_val_loss,
                       tokens=tokens_seen, wall_time_s=wall_time(), step=iter_num,
                       nonfinite_skipped=nonfinite_skipped, last_train_loss=last_loss, **final)
        _write_json(run_dir / 'summary.json', _clean(summary))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(obj, indent=2) + '\n')
    os.replace(tmp, path)


def wall_time() -> float:
    return wall_time_before + time.time() - _t_start


# -----------------------------------------------------------------------------
# distributed set-up and every config check, before any work
world_size = int(os.environ.get('WORLD_SIZE', 1)) if parallelism != 'none' else 1
_validate(config, int(os.environ.get('WORLD_SIZE', 1)))
rank = int(os.environ.get('RANK', 0)) if world_size > 1 or parallelism != 'none' else 0
master = rank == 0
if parallelism != 'none':
    if device.startswith('cuda'):
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
grad_accum = gradient_accumulation_steps // world_size  # micro-steps per rank
# bf16: autocast (matmuls in bf16, softmax/CE in fp32), plus FSDP2's bf16 parameter all-gathers on GPU
autocast = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()
fsdp_mixed = parallelism == 'fsdp' and dtype == 'bfloat16' and device_type == 'cuda'
try:
    _lr(0), _lr(max_iters)  # schedule settings are checked by optim.get_lr
except ValueError as e:
    _fail(str(e))
run_dir = Path(out_dir)
pre_ckpt = None  # the checkpoint whose weights (resume, finetune) are loaded
if init_from == 'resume':
    pre_ckpt = torch.load(run_dir / 'ckpt.pt', map_location='cpu', weights_only=True)
elif init_from == 'finetune':
    if not (Path(finetune_from) / 'ckpt.pt').is_file():
        _fail(f"finetune_from={finetune_from!r} has no ckpt.pt: point it at a pretraining out_dir")
    pre_ckpt = torch.load(Path(finetune_from) / 'ckpt.pt', map_location='cpu', weights_only=True)
    pre_ckpt = {k: pre_ckpt[k] for k in ('model', 'model_args', 'config')}  # weights only: fresh optimizer

# -----------------------------------------------------------------------------
# data: prepared on first use by rank 0, then memory-mapped by every rank
data_dir = Path(data_root) / dataset
if init_from == 'finetune':  # the tokenizer and validation data of the pretraining run
    data_dir = Path(pre_ckpt['config']['data_root']) / pre_ckpt['config']['dataset']
if master and init_from != 'finetune' and (tokenizer or not (data_dir / 'train.bin').is_file()):
    # a given tokenizer re-prepares the folder only when it differs (data.py compares recipes)
    try:
        data.prepare_dataset(dataset, data_root=data_root, tokenizer=tokenizer or None)
    except (ValueError, FileNotFoundError) as e:
        _fail(f"cannot prepare dataset {dataset!r} in {data_dir}: {e}")
if world_size > 1:
    dist.barrier()
meta = data.load_meta(data_dir)
train_data = data.load_tokens(data_dir, 'train')
val_data = data.load_tokens(data_dir, 'val')
data_vocab = meta.get('vocab_size') or 50304  # nanoGPT folder without meta.pkl: GPT-2 tokens, padded
tok = data.dataset_tokenizer(data_dir) if meta.get('tokenizer') else None
if init_from == 'finetune' and tok is None:
    _fail(f"init_from='finetune' needs the tokenizer of the pretraining data, but {data_dir} records none "
          f"(nanoGPT layout): pretrain on a dataset prepared by data.py")

# -----------------------------------------------------------------------------
# model args: preset, config keys, vocabulary from the data (or the checkpoint); shape checks
if pre_ckpt is not None:
    model_args = dict(pre_ckpt['model_args'])
    asked = _model_args(config, data_vocab)
    diff = {k: (model_args.get(k), v) for k, v in asked.items() if k != 'dropout' and model_args.get(k) != v}
    if init_from == 'resume' and diff:
        _fail(f"init_from='resume': {run_dir / 'ckpt.pt'} has another model shape than the config asks for: "
              + ', '.join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
              + ". Pass the same config/overrides as the original run, or start a new --out_dir")
    model_args['dropout'] = dropout
elif init_from.startswith('gpt2-hf:'):
    hf_model = GPT.from_hf(init_from.split(':', 1)[1])
    model_args = dict(dataclasses.asdict(hf_model.config), dropout=dropout)  # weights are copied below
else:
    model_args = _model_args(config, data_vocab)
if pre_ckpt is None and not init_from.startswith('gpt2-hf:'):
    block_size = model_args['block_size']  # a preset may set it; else training windows may be shorter
if block_size > model_args['block_size']:
    _fail(f"block_size={block_size} is longer than the model's context {model_args['block_size']}: use "
          f"--block_size={model_args['block_size']} or less")
_resolved = {k: v for k, v in model_args.items() if k in config and k != 'block_size'}
config.update(_resolved, block_size=block_size)  # config.json shows what the run used
config['tokenizer_spec'] = tok.name if tok else None  # the tokenizer actually used (sample.py reads it)
globals().update(_resolved)
try:
    GPTConfig(**model_args)
except ValueError as e:
    _fail(str(e))
if data_vocab > model_args['vocab_size']:
    _fail(f"the data's vocabulary ({data_vocab}) is larger than the model's ({model_args['vocab_size']})")
tokens_per_step = grad_accum * world_size * batch_size * block_size  # data-parallel degree = world size
if len(val_data) <= block_size:
    _fail(f"{data_dir}/val.bin has {len(val_data)} tokens, not more than block_size={block_size}: "
          f"use a smaller block_size or a larger validation split")
val_langs = {}  # lang -> (val_<lang>.bin tokens, tokens per UTF-8 byte from meta.json for bits per byte)
for split in meta.get('val_splits', []):
    lang_meta = meta.get('languages', {}).get(split[4:], {})
    per_byte = lang_meta['val_tokens'] / lang_meta['val_bytes'] if lang_meta.get('val_bytes') else None
    val_langs[split[4:]] = (data.load_tokens(data_dir, split), per_byte)
try:  # the loaders check that every rank gets a batch; a resumed loader continues where it stopped
    if init_from == 'finetune':  # chat batches, loss only on assistant tokens (other targets IGNORE_INDEX)
        chats = data.load_chat_jsonl(finetune_data)
        val_chats = data.load_chat_jsonl(finetune_val_data) if finetune_val_data else chats
        loader = data.ChatLoader(chats, tok, batch_size, block_size, rank=rank, world_size=world_size,
                                 seed=seed, device=device)
    else:
        loader = data.SequentialLoader(train_data, batch_size, block_size, rank=rank, world_size=world_size,
                                       seed=seed, device=device)
    if init_from == 'resume':
        loader.load_state_dict(pre_ckpt['loader'])
except ValueError as e:
    _fail(str(e))

# -----------------------------------------------------------------------------
# model: build (optionally on the meta device), activation checkpointing, DDP/FSDP2, compile
device_peak_flops(device)  # cache it now: on CPU it times a matmul of torch.randn (would shift the RNG)
torch.manual_seed(seed)  # the same initial weights on every rank (FSDP2 shards them, DDP checks them)
if init_device == 'meta':
    with torch.device('meta'):
        model = GPT(GPTConfig(**model_args))
else:
    model = GPT(GPTConfig(**model_args))
if activation_checkpointing:  # per block: keep only each block's input, recompute the rest in backward
    for block in model.transformer.h:
        block.forward = partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)
if parallelism == 'fsdp':  # FSDP2: one unit per block + the root (embeddings, ln_f, lm_head: tying is safe)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if fsdp_mixed else None
    for block in model.transformer.h:
        fully_shard(block, **({'mp_policy': mp} if mp else {}))
    fully_shard(model, **({'mp_policy': mp} if mp else {}))
if init_device == 'meta':  # materialise (each rank only its shards under FSDP2), then initialise
    model.to_empty(device=device)
    model.init_weights()
model.to(device)
raw_model = model  # the GPT itself (its parameters are DTensor shards under FSDP2): state dicts, generate
if parallelism == 'ddp':
    model = DDP(model, device_ids=[torch.device(device).index] if device_type == 'cuda' else None)
ddp_model = model  # the DDP wrapper itself (compile wraps it below): its gradient-sync switch
opt = optim.configure_optimizer(raw_model, optimizer=optimizer, learning_rate=learning_rate,
                                weight_decay=weight_decay, betas=(beta1, beta2),
                                coupled_adam_avg_scale=coupled_adam_avg_scale, device_type=device_type,
                                decay_token_embedding=decay_token_embedding,
                                coupled_adam_embedding=coupled_adam_embedding)
iter_num, tokens_seen, best_val_loss, nonfinite_skipped, wall_time_before = 0, 0, float('inf'), 0, 0.0
if pre_ckpt is not None or init_from.startswith('gpt2-hf:'):  # weights: checkpoint, or the HF model's
    weights = pre_ckpt['model'] if pre_ckpt is not None else hf_model.state_dict()
    set_model_state_dict(raw_model, weights, options=StateDictOptions(full_state_dict=True))
    del weights
if init_from == 'resume':  # everything else: optimizer, step, data position, RNG
    set_optimizer_state_dict(raw_model, opt, pre_ckpt['optimizer'],
                             options=StateDictOptions(full_state_dict=True))
    iter_num, tokens_seen = pre_ckpt['step'], pre_ckpt['tokens']
    best_val_loss, nonfinite_skipped = pre_ckpt['best_val_loss'], pre_ckpt['nonfinite_skipped']
    wall_time_before = pre_ckpt['wall_time_s']
    if pre_ckpt['world_size'] == world_size:
        _set_rng_state(pre_ckpt['rng'][rank])
    else:  # only dropout draws from these; nothing else in the loop is random
        torch.manual_seed(seed + rank + iter_num)
else:
    torch.manual_seed(seed + rank)  # per-rank dropout
del pre_ckpt
if compile:
    model = torch.compile(model)
log_unigram = losses.unigram_log_probs(train_data[:1 << 28], model_args['vocab_size']) if master else None

# -----------------------------------------------------------------------------
# run folder
if master:
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / 'config.json', dict(
        config, git_commit=_git_commit(), torch_version=torch.__version__, world_size=world_size,
        grad_accum_per_rank=grad_accum, tokens_per_step=tokens_per_step, model_args=model_args,
        num_params=raw_model.num_params(), resumed_from_step=iter_num))
    metrics_path = run_dir / 'metrics.jsonl'
    if init_from == 'resume' and metrics_path.exists():  # drop records the resumed run will write again
        keep = [ln for ln in metrics_path.read_text().splitlines()
                if ln and json.loads(ln)['step'] <= iter_num]
        metrics_path.write_text(''.join(ln + '\n' for ln in keep))
    elif init_from != 'resume':
        metrics_path.unlink(missing_ok=True)
    if wandb_log:
        try:
            import wandb
        except ImportError:
            _fail("wandb_log=True but wandb is not installed: `pip install wandb` or --wandb_log=False")
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)
    print(f"{raw_model.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens/step ({world_size} "
          f"rank(s) x {grad_accum} micro-steps x {batch_size} x {block_size}), device {device}, "
          f"parallelism {parallelism}")

# SIGTERM/SIGINT: finish the current step, save a checkpoint, exit 0 (the flag is all-reduced every step,
# so every rank stops at the same step)
stop_signal = []
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda signum, frame: stop_signal.append(signal.Signals(signum).name))

# -----------------------------------------------------------------------------
# training loop
params = [p for p in raw_model.parameters() if p.requires_grad]
term_keys = ['ce'] + [k for k, lam in (('z_loss', z_loss), ('mu_loss', mu_loss)) if lam > 0]
last_eval, last_loss, last_ckpt = {}, None, (run_dir / 'ckpt.pt') if init_from == 'resume' else None
start_iter, stopping = iter_num, False
t_log, tokens_at_log = time.time(), tokens_seen
pbar = tqdm(total=max_iters, initial=iter_num, disable=not master, dynamic_ncols=True, desc='train')
while True:
    # evaluate and checkpoint (not again at the step a resumed run starts from: that one is on disk)
    if (iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only) and not (
            init_from == 'resume' and iter_num == start_iter and not eval_only):
        t_eval = time.time()
        last_eval = dict(step=iter_num, tokens=tokens_seen, **evaluate())
        log_metrics(last_eval)
        if master:
            langs = ''.join(f", {k} {v:.4f}" for k, v in last_eval.items()
                            if k.startswith(('val_loss/', 'val_bpb/')))
            tqdm.write(f"step {iter_num}: train loss {last_eval['train_loss']:.4f}, "
                       f"val loss {last_eval['val_loss']:.4f}{langs}")
        improved = last_eval['val_loss'] < best_val_loss
        best_val_loss = min(best_val_loss, last_eval['val_loss'])
        if iter_num > start_iter and (improved or always_save_checkpoint):
            save('eval')
        t_log += time.time() - t_eval  # tokens/s counts training time only
    if iter_num >= max_iters or eval_only:
        break
    if stopping:  # decided from the all-reduced flag, so every rank saves at the same step
        save(f"stopped by {stop_signal[0]}")
        write_summary(finished=False, diverged=False)
        if master:
            tqdm.write(f"stopped by {stop_signal[0]} at step {iter_num}; resume with --init_from=resume")
        break

    # one optimizer step = grad_accum micro-steps per rank
    lr = _lr(iter_num)
    for group in opt.param_groups:
        group['lr'] = lr
    stats = torch.zeros(len(term_keys) + 1, device=device)  # total loss, then the terms
    for micro_step in range(grad_accum):
        x, y = loader.next_batch()
        last_micro = micro_step == grad_accum - 1
        if parallelism == 'ddp':  # sync gradients only on the last micro-step (nanoGPT)
            ddp_model.require_backward_grad_sync = last_micro
        elif parallelism == 'fsdp':
            raw_model.set_requires_gradient_sync(last_micro)
        with autocast:
            logits = model(x)
            out_emb = raw_model.output_embedding() if mu_loss > 0 else None
            loss, terms = losses.compute_loss(logits, y, out_emb, z_loss=z_loss, mu_loss=mu_loss)
        if iter_num + 1 == inject_nonfinite_at_step:
            loss = loss * float('inf')
        (loss / grad_accum).backward()
        stats += torch.stack([loss.detach().float()] + [terms[k].float() for k in term_keys]) / grad_accum
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float('inf'))
    if hasattr(grad_norm, 'full_tensor'):
        grad_norm = grad_norm.full_tensor()
    stats = torch.cat([stats / world_size, torch.tensor([float(bool(stop_signal))], device=device)])
    if world_size > 1:
        dist.all_reduce(stats)  # loss = mean over the global batch; stop flag > 0 if any rank got a signal
    *vals, stop_flag, grad_norm_v = torch.cat([stats, grad_norm.detach().float().reshape(1)]).tolist()  # sync
    stopping = stop_flag > 0
    if stopping and not stop_signal:
        stop_signal.append('a signal on another rank')
    if not all(math.isfinite(v) for v in vals + [grad_norm_v]):  # NaN/inf: skip the batch or stop, never step
        opt.zero_grad(set_to_none=True)
        where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint written yet"
        if not skip_nonfinite:
            last_loss = vals[0]
            write_summary(finished=False, diverged=True)
            pbar.close()
            raise SystemExit(f"train.py: non-finite loss {vals[0]} (grad norm {grad_norm_v}) at step "
                             f"{iter_num + 1}; stopped without updating the weights; {where}. Lower "
                             f"learning_rate, add z_loss/mu_loss/mu_centering, or set skip_nonfinite=True")
        nonfinite_skipped += 1
        if master:
            tqdm.write(f"step {iter_num + 1}: non-finite loss {vals[0]}: batch skipped "
                       f"({nonfinite_skipped} so far)")
    else:
        opt.step()
        opt.zero_grad(set_to_none=True)
        if mu_centering:  # OEC §1.4: after step + zero_grad, on the output embedding only (also when tied)
            optim.mu_centering_(raw_model.output_embedding())
        last_loss = vals[0]
    iter_num += 1
    tokens_seen += tokens_per_step
    pbar.update(1)

    if iter_num % log_interval == 0 or iter_num == max_iters:  # step = steps done; loss = that of the last
        dt, t_log = time.time() - t_log, time.time()
        tok_s = (tokens_seen - tokens_at_log) / dt
        tokens_at_log = tokens_seen
        rec = dict(step=iter_num, tokens=tokens_seen, loss=vals[0], lr=lr, grad_norm=grad_norm_v,
                   tokens_per_sec=tok_s, mfu=raw_model.estimate_mfu(tok_s / world_size, device),
                   **dict(zip(term_keys, vals[1:])), nonfinite_skipped=nonfinite_skipped,
                   peak_mem_mb=(torch.cuda.max_memory_allocated(device) if device_type == 'cuda'
                                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20)
        log_metrics(rec)
        pbar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}",
                         mfu=f"{rec['mfu']:.1%}")

pbar.close()
if iter_num >= max_iters and not stopping and not eval_only:
    write_summary(finished=True, diverged=False)

# -----------------------------------------------------------------------------
# a sample from the trained model (every FSDP2 rank joins the forward passes, rank 0 prints)
if sample_tokens > 0 and tok is not None and not stopping and (master or parallelism == 'fsdp'):
    torch.manual_seed(seed)
    raw_model.eval()
    start = torch.tensor([[tok.eot]], device=device)
    with autocast:
        out = raw_model.generate(start, sample_tokens, temperature=0.8, top_k=200)
    if master:
        print('-' * 80 + '\n' + tok.decode(out[0, 1:].tolist()) + '\n' + '-' * 80)
if wandb_log and master:
    wandb.finish()
if world_size > 1:
    dist.destroy_process_group()
