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
import hashlib
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from datetime import timedelta
from functools import partial
from pathlib import Path

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
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint
import data
import losses
import optim
from chat import ChatLoader, load_chat_jsonl
from checkpoint import CKPT, CheckpointError
from configurator import configure
from hf import load_gpt2
from loader import SequentialLoader, get_batch
from losses import IGNORE_INDEX
from mfu import peak_flops
from model import GPT, GPTConfig
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
checkpoint_format = 'full'  # 'full': one portable file, gathered on rank 0 (12 bytes/parameter: 75 GiB at 6.7B);
#   'dcp': sharded, every rank writes its shards (torch.distributed.checkpoint) to ckpt_<step>.dcp/ on a filesystem
#   all nodes share; resumes on any world size; `python checkpoint.py convert OUT_DIR --to=DIR` makes it 'full'
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir/ckpt.pt) | 'gpt2-hf:<HF GPT2 folder>' | 'finetune'
overwrite = False  # a new run into an out_dir that holds a checkpoint: True replaces that run, else stop
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
vocab_multiple = None  # pad the vocabulary up to a multiple of this; None = 64 on CUDA (faster matmuls), 1 on CPU
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
fsdp_shard_size = 0  # HSDP: shard within groups of this many ranks (GPUs per node), replicate across groups; 0 = all
fsdp_reduce_every_micro_step = True  # FSDP2 + accumulation: reduce-scatter gradients at every micro-step, so only
#   gradient shards are held (lean); False = only at the last micro-step (fewer collectives, full fp32 gradients held)
tf32 = True  # CUDA fp32 matmuls/convolutions in TF32 (faster, 10-bit mantissa); False = exact fp32. No effect on CPU
activation_checkpointing = False  # recompute each block's activations in backward (less memory)
init_device = ''  # '' = build the model on `device`; 'meta' = build on meta, shard, then materialise
seed = 1337
skip_nonfinite = False  # on a NaN/inf loss or grad norm: skip the batch (counted) instead of stopping
inject_nonfinite_at_step = -1  # debug/tests: multiply the loss of step N (1-based, as logged) by inf
debug_ckpt_sleep = 0.0  # debug/tests: seconds between writing the temp checkpoint and renaming it
# -----------------------------------------------------------------------------
config = configure(globals(), sys.argv[1:])
set_keys = config.set_keys  # the keys a config file or the command line set: they always win
_t_start = time.time()
_MODEL_KEYS = [f.name for f in dataclasses.fields(GPTConfig) if f.name != 'vocab_size']
# keys that describe this launch, not the run: a resumed run takes every other key from its checkpoint
_LAUNCH_KEYS = ('out_dir', 'init_from', 'overwrite', 'eval_only', 'sample_tokens', 'wandb_log', 'device',
                'dtype', 'compile', 'parallelism', 'activation_checkpointing', 'init_device',
                'inject_nonfinite_at_step', 'debug_ckpt_sleep', 'fsdp_shard_size', 'fsdp_reduce_every_micro_step',
                'tf32')


def _fail(msg: str) -> None:
    """Stop before any work with one clear message (every rank raises it, so torchrun exits cleanly)."""
    raise SystemExit(f"train.py: {msg}")


def _model_args(cfg: dict, set_keys: frozenset, vocab_size: int) -> dict:
    """GPTConfig kwargs: the preset (if any), then every model key you set (whatever its value; the
    defaults fill what the preset leaves open), the vocabulary padded up to vocab_multiple."""
    preset = dict(_PRESETS[cfg['model_preset']]) if cfg['model_preset'] else {}
    args = {k: cfg[k] if k in set_keys or k not in preset else preset[k] for k in _MODEL_KEYS}
    multiple = cfg['vocab_multiple'] or 1  # resolved before the model (None: 64 on CUDA, 1 on CPU)
    return dict(args, vocab_size=math.ceil(vocab_size / multiple) * multiple)


def _lr(it: int, cfg: dict) -> float:
    return optim.get_lr(it, cfg['schedule'] if cfg['decay_lr'] else 'constant', cfg['learning_rate'],
                        cfg['min_lr'], cfg['warmup_iters'], cfg['lr_decay_iters'], cfg['max_iters'],
                        cfg['wsd_decay_frac'])


def _validate(cfg: dict, set_keys: frozenset, world_size: int) -> None:
    """Every check that needs no data or model, before any work (Modalities-style fail fast): choices, ranges,
    contradictions between keys, and the launch environment. Each message names the key(s) and the fix."""
    choices = dict(parallelism=('none', 'ddp', 'fsdp'), optimizer=('adamw', 'coupled_adam'),
                   coupled_adam_embedding=('output', 'input'),
                   schedule=('cosine', 'wsd', 'constant'), dtype=('float32', 'bfloat16'),
                   init_device=('', 'meta'), checkpoint_format=('full', 'dcp'))
    for key, allowed in choices.items():
        if cfg[key] not in allowed:
            hint = (" (float16 needs a loss scaler, which this loop does not have: use bfloat16)"
                    if cfg[key] == 'float16' else "")
            _fail(f"{key}={cfg[key]!r} is not one of {allowed}{hint}: fix --{key}")
    for key in ('z_loss', 'mu_loss', 'weight_decay', 'grad_clip', 'learning_rate', 'min_lr', 'dropout',
                'max_iters', 'warmup_iters', 'lr_decay_iters', 'sample_tokens'):
        if cfg[key] < 0:
            _fail(f"{key}={cfg[key]} is negative: use 0 (off) or a positive value")
        if not math.isfinite(cfg[key]) or cfg[key] > torch.finfo(torch.float32).max:  # nan slips past '< 0'
            _fail(f"{key}={cfg[key]} is not a finite float32 value: set --{key} to a number below 3.4e38")
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval',
                'eval_iters', 'keep_last_k'):
        if cfg[key] < 1:
            _fail(f"{key}={cfg[key]} must be >= 1: set --{key} to 1 or more")
    if cfg['vocab_multiple'] is not None and (not isinstance(cfg['vocab_multiple'], int) or cfg['vocab_multiple'] < 1):
        _fail(f"vocab_multiple={cfg['vocab_multiple']!r} must be an integer >= 1: set --vocab_multiple to 1 or "
              f"more, or None (64 on CUDA, 1 on CPU)")
    shard = cfg['fsdp_shard_size']
    if shard and (cfg['parallelism'] != 'fsdp' or shard < 0 or world_size % shard):
        _fail(f"fsdp_shard_size={shard} needs --parallelism=fsdp and must divide the world size {world_size} "
              f"(HSDP: shard within groups of that many ranks, e.g. the GPUs of one node); 0 = plain FSDP2")
    for key in ('beta1', 'beta2'):
        if not 0 <= cfg[key] < 1:
            _fail(f"{key}={cfg[key]} must be in [0, 1) (AdamW's moment decay): e.g. --beta1=0.9 --beta2=0.95")
    if cfg['min_lr'] > cfg['learning_rate']:
        _fail(f"min_lr={cfg['min_lr']} is above learning_rate={cfg['learning_rate']}: the schedule would rise; "
              f"set --min_lr <= --learning_rate (usually learning_rate/10)")
    if cfg['coupled_adam_avg_scale'] <= 0:
        _fail(f"coupled_adam_avg_scale={cfg['coupled_adam_avg_scale']} must be > 0 (1.0 = the paper)")
    if not cfg['decay_lr'] and cfg['schedule'] != 'constant' and 'schedule' in set_keys:
        _fail(f"decay_lr=False asks for a constant learning rate but schedule={cfg['schedule']!r} decays it: "
              f"drop one of --decay_lr=False and --schedule={cfg['schedule']}")
    if cfg['logit_softcap'] is not None and cfg['logit_softcap'] <= 0:
        _fail(f"logit_softcap={cfg['logit_softcap']} must be > 0 (OEC v2 uses 30) or None (off)")
    if cfg['model_preset'] and cfg['model_preset'] not in _PRESETS:
        _fail(f"model_preset={cfg['model_preset']!r} is unknown: use one of {sorted(_PRESETS)}")
    if cfg['init_from'] == 'scratch':  # the model keys' own checks (shape, choices), before the data
        try:
            GPTConfig(**_model_args(cfg, set_keys, vocab_size=1))
        except ValueError as e:
            _fail(str(e))
    if not (cfg['init_from'] in ('scratch', 'resume', 'finetune') or cfg['init_from'].startswith('gpt2-hf:')):
        _fail(f"init_from={cfg['init_from']!r}: use 'scratch', 'resume', 'finetune' or 'gpt2-hf:<folder>' "
              f"(a local Hugging Face GPT2LMHeadModel folder; nothing is downloaded)")
    if cfg['init_from'] == 'finetune' and not (cfg['finetune_from'] and cfg['finetune_data']):
        _fail("init_from='finetune' needs --finetune_from=<pretraining out_dir> and "
              "--finetune_data=<chat.jsonl>")
    if cfg['init_from'] not in ('finetune', 'resume'):
        for key in ('finetune_from', 'finetune_data', 'finetune_val_data'):
            if cfg[key]:
                _fail(f"{key} is used only with init_from='finetune': add --init_from=finetune or drop --{key}")
    for key in ('finetune_data', 'finetune_val_data'):
        if cfg[key] and not Path(cfg[key]).is_file():
            _fail(f"{key}={cfg[key]!r} not found: give a chat JSONL file")
    if cfg['init_from'] == 'finetune' and not (Path(cfg['finetune_from']) / CKPT).is_file():
        _fail(f"finetune_from={cfg['finetune_from']!r} has no {CKPT}: point it at a pretraining out_dir")
    if cfg['init_from'] == 'resume' and not (Path(cfg['out_dir']) / CKPT).is_file():
        _fail(f"init_from='resume' but {cfg['out_dir']}/{CKPT} does not exist: check --out_dir or use "
              f"init_from='scratch'")
    if cfg['init_from'] in ('resume', 'finetune') and 'tokenizer' in set_keys:
        _fail(f"init_from={cfg['init_from']!r} trains with the checkpoint's tokenizer and data: drop "
              f"--tokenizer (or start a new run with init_from='scratch')")
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
    try:  # the schedule's own checks (optim.get_lr raises on settings that leave no decay phase, ...)
        _lr(0, cfg), _lr(cfg['max_iters'], cfg)
    except ValueError as e:
        _fail(str(e))


def _check_data_prepared(cfg: dict, world_size: int, resuming: bool) -> None:
    """Under torchrun, rank 0 preparing a large dataset while the other ranks wait at a barrier times out
    (NCCL/gloo default 10-30 min): a missing folder is prepared beforehand, in one process."""
    data_dir = Path(cfg['data_root']) / cfg['dataset']
    if world_size > 1 and not resuming and not (data_dir / 'train.bin').is_file():
        tok = f" --tokenizer={cfg['tokenizer']}" if cfg['tokenizer'] else ''
        _fail(f"{data_dir} is not prepared, and preparing it under torchrun would time out the waiting ranks: "
              f"run `python data.py prepare --dataset={cfg['dataset']} --data_root={cfg['data_root']}{tok}` "
              f"once, then this command again")


def _set_tf32(device_type: str, enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (bf16 autocast matmuls are unaffected)."""
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _fsdp_mesh(world_size: int, shard_size: int, device_type: str):
    """The DeviceMesh for fully_shard: 1-D over all ranks (FSDP2), or 2-D (replicate, shard) for HSDP, where
    each parameter is sharded over `shard_size` ranks (one node) and replicated across world/shard_size
    groups (gradients: reduce-scatter within a group, all-reduce across groups)."""
    if not shard_size or shard_size == world_size:
        return init_device_mesh(device_type, (world_size,))
    return init_device_mesh(device_type, (world_size // shard_size, shard_size),
                            mesh_dim_names=('replicate', 'shard'))


def _guarded_step(opt: torch.optim.Optimizer, ok: torch.Tensor) -> None:
    """opt.step() only where ok (a 0-dim bool on the device) is True, without reading ok back when the optimizer
    can skip on the device: fused AdamW's found_inf (as torch.amp.GradScaler) leaves weights, moments and
    step count untouched. Other optimizers read ok back (a host sync; free on CPU)."""
    if opt.defaults.get('fused'):
        opt.found_inf = (~ok).float()
        opt.step()
    elif bool(ok):
        opt.step()
    opt.zero_grad(set_to_none=True)


@torch.no_grad()
def _mu_centering_where(weight: torch.Tensor, ok: torch.Tensor) -> None:
    """optim.mu_centering_ (OEC §1.4) where ok, a bitwise no-op elsewhere (subtracts mean * 0), no host sync."""
    weight.sub_(weight.mean(dim=0, keepdim=True) * ok)


def _shape_conflicts(model_args: dict, cfg: dict, set_keys: frozenset, source: str) -> None:
    """A model key you set that the loaded weights (checkpoint or HF folder) contradict stops the run."""
    asked = {k: cfg[k] for k in _MODEL_KEYS if k in set_keys and k not in ('dropout', 'block_size')}
    if 'model_preset' in set_keys and cfg['model_preset']:
        asked = {k: v for k, v in _PRESETS[cfg['model_preset']].items() if k in _MODEL_KEYS} | asked
    diff = {k: (model_args.get(k), v) for k, v in asked.items() if k in model_args and model_args[k] != v}
    if diff:
        _fail(f"{source} has another model shape than the keys you set: "
              + ', '.join(f"{k}: {a!r} there vs {b!r} set" for k, (a, b) in diff.items())
              + f". Drop --{' --'.join(diff)} (the weights decide the shape), or start a new --out_dir "
                f"with init_from='scratch'")


def _git_commit() -> str:
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'


def _file_sha256(path: str) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _clean(rec: dict) -> dict:
    """JSON-safe: non-finite floats become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def _check_writable(folder: Path) -> None:
    """out_dir must be creatable and writable (the nearest existing folder on its path is checked)."""
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        _fail(f"out_dir={str(folder)!r}: {existing} is a file, not a folder: choose another --out_dir")
    if not os.access(existing, os.W_OK):
        _fail(f"out_dir={str(folder)!r}: {existing} is not writable: choose another --out_dir")


# -----------------------------------------------------------------------------
# resume: the checkpoint's config, then every key you set; then every config check, before any work
world_size = int(os.environ.get('WORLD_SIZE', 1)) if parallelism != 'none' else 1
_validate(config, set_keys, int(os.environ.get('WORLD_SIZE', 1)))
pre_ckpt = None  # the checkpoint whose weights (resume, finetune) are loaded
try:
    if init_from == 'resume':
        pre_ckpt = checkpoint.load_checkpoint(Path(out_dir) / CKPT)
        inherited = {k: v for k, v in pre_ckpt['config'].items()
                     if k in config and k not in set_keys and k not in _LAUNCH_KEYS}
        config.update(inherited)
        _validate(config, set_keys, int(os.environ.get('WORLD_SIZE', 1)))
    elif init_from == 'finetune':
        pre_ckpt = checkpoint.load_checkpoint(Path(finetune_from) / CKPT)
        pre_ckpt = {k: pre_ckpt.get(k) for k in ('model', 'model_args', 'config', 'data_identity', 'dcp',
                                                 'dcp_path')}
        for key in ('dataset', 'data_root'):  # the tokenizer and validation data of the pretraining run
            if key in set_keys and config[key] != pre_ckpt['config'][key]:
                _fail(f"init_from='finetune' uses the pretraining run's {key} "
                      f"({pre_ckpt['config'][key]!r}), not {config[key]!r}: drop --{key}")
            config[key] = pre_ckpt['config'][key]
except CheckpointError as e:
    _fail(str(e))
if not config['decay_lr']:
    config['schedule'] = 'constant'  # nanoGPT's decay_lr=False, recorded as what the run does
globals().update(config)  # the resolved values (inherited, finetune's data folder, schedule) as globals
chat = bool(finetune_data)  # chat fine-tuning (init_from='finetune', or the resume of such a run)
run_dir = Path(out_dir)
if init_from != 'resume' and checkpoint.has_checkpoint(run_dir) and not overwrite:
    _fail(f"out_dir={out_dir!r} holds another run's checkpoint: continue it with --init_from=resume, choose "
          f"a new --out_dir, or pass --overwrite=True to replace that run")
_check_writable(run_dir)
_check_data_prepared(config, world_size, pre_ckpt is not None)

# -----------------------------------------------------------------------------
# distributed set-up
rank = int(os.environ.get('RANK', 0)) if world_size > 1 or parallelism != 'none' else 0
master = rank == 0
if parallelism != 'none':
    if device.startswith('cuda'):
        device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}"
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo')
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
_set_tf32(device_type, tf32)
if config['vocab_multiple'] is None:  # 64 on CUDA: tensor-core friendly lm_head shapes (nanoGPT's 50304)
    config['vocab_multiple'] = vocab_multiple = 64 if device_type == 'cuda' else 1
grad_accum = gradient_accumulation_steps // world_size  # micro-steps per rank
# bf16: autocast (matmuls in bf16; residual stream, embeddings, norms, softmax/CE and the mu-loss in fp32), the same
# recipe for one process, DDP and FSDP2 (FSDP2 without a MixedPrecisionPolicy: its bf16 param_dtype would also
# cast the residual stream and embeddings; the price is fp32 all-gathers, twice the bytes of bf16 ones)
autocast = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == 'bfloat16' else nullcontext()

# -----------------------------------------------------------------------------
# data: a new run prepares its folder on first use (rank 0); resume and finetune only read the folder
# their checkpoint trained on, and stop if it is not the same (data.dataset_identity) before anything else
data_dir = Path(data_root) / dataset
if master and pre_ckpt is None and (tokenizer or not (data_dir / 'train.bin').is_file()):
    # a given tokenizer re-prepares the folder only when it differs (data.py compares recipes)
    try:
        data.prepare_dataset(dataset, data_root=data_root, tokenizer=tokenizer or None)
    except (ValueError, OSError) as e:
        _fail(f"cannot prepare dataset {dataset!r} in {data_dir}: {e}")
if world_size > 1:  # a given tokenizer may make rank 0 rebuild the folder: wait for it without the 10-30 min
    dist.barrier(group=dist.new_group(backend='gloo', timeout=timedelta(hours=12)))  # collective timeout
try:
    meta = data.load_meta(data_dir)
    train_data = data.load_tokens(data_dir, 'train')  # checked against meta.json's length and dtype
    val_data = data.load_tokens(data_dir, 'val')
    identity = data.dataset_identity(data_dir)
    tok = data.dataset_tokenizer(data_dir) if meta.get('tokenizer') else None
except (ValueError, OSError) as e:
    _fail(f"dataset {str(data_dir)!r}: {e}")
identity['chat_sha256'] = _file_sha256(finetune_data)
if pre_ckpt is not None and pre_ckpt.get('data_identity'):
    what = dict(dataset_id=f"the dataset folder {data_dir}", tokenizer_id=f"the tokenizer of {data_dir}",
                chat_sha256=f"finetune_data={finetune_data!r}")
    changed = [w for k, w in what.items() if (init_from == 'resume' or k != 'chat_sha256')
               and pre_ckpt['data_identity'].get(k) != identity.get(k)]
    if changed:
        _fail(f"{', '.join(changed)} changed since the checkpoint {finetune_from or out_dir} was written "
              f"(identity hashes differ): restore the data the run trained on, or start a new run with "
              f"init_from='scratch'")
data_vocab = meta.get('vocab_size') or 50304  # nanoGPT folder without meta.pkl: GPT-2 tokens, padded
if chat and tok is None:
    _fail(f"init_from='finetune' needs the tokenizer of the pretraining data, but {data_dir} records none "
          f"(nanoGPT layout): pretrain on a dataset prepared by data.py")

# -----------------------------------------------------------------------------
# model args: preset, then every model key you set; or the checkpoint's / HF folder's shape. Shape checks
if pre_ckpt is not None:
    model_args = dict(pre_ckpt['model_args'])
    _shape_conflicts(model_args, config, set_keys, f"the checkpoint of {finetune_from or out_dir}")
    model_args['dropout'] = dropout  # resume: the run's own (inherited); finetune: this config's
elif init_from.startswith('gpt2-hf:'):
    try:
        hf_model = load_gpt2(init_from.split(':', 1)[1], dropout=dropout)
    except (ValueError, OSError) as e:
        _fail(f"init_from={init_from!r}: {e}")
    model_args = dataclasses.asdict(hf_model.config)  # weights are copied below
    _shape_conflicts(model_args, config, set_keys, f"the Hugging Face folder {init_from[8:]}")
else:
    model_args = _model_args(config, set_keys, data_vocab)
if 'block_size' not in set_keys and init_from != 'resume':
    block_size = model_args['block_size']  # the model's context (a preset's, the checkpoint's, HF's)
if block_size > model_args['block_size']:
    _fail(f"block_size={block_size} is longer than the model's context {model_args['block_size']}: use "
          f"--block_size={model_args['block_size']} or less")
config.update({k: model_args[k] for k in _MODEL_KEYS if k != 'block_size'}, block_size=block_size)
config['tokenizer_spec'] = tok.name if tok else None  # the tokenizer actually used (sample.py reads it)
config['data_identity'] = identity
try:
    GPTConfig(**model_args)
except ValueError as e:
    _fail(str(e))
if data_vocab > model_args['vocab_size']:
    _fail(f"the data's vocabulary ({data_vocab}) is larger than the model's ({model_args['vocab_size']})")
tokens_per_step = grad_accum * world_size * batch_size * block_size  # token slots; chat counts real tokens
if len(val_data) <= block_size:
    _fail(f"{data_dir}/val.bin has {len(val_data)} tokens, not more than block_size={block_size}: "
          f"use a smaller block_size or a larger validation split")
val_langs = {}  # lang -> (val_<lang>.bin tokens, tokens per UTF-8 byte from meta.json for bits per byte)
try:
    for split in meta.get('val_splits', []):
        lang_meta = meta.get('languages', {}).get(split[4:], {})
        per_byte = lang_meta['val_tokens'] / lang_meta['val_bytes'] if lang_meta.get('val_bytes') else None
        val_langs[split[4:]] = (data.load_tokens(data_dir, split), per_byte)
    # the loaders check that every rank gets a batch; a resumed loader continues where it stopped
    if chat:  # chat batches, loss only on assistant tokens (other targets IGNORE_INDEX)
        chats = load_chat_jsonl(finetune_data)
        val_chats = load_chat_jsonl(finetune_val_data) if finetune_val_data else chats
        loader = ChatLoader(chats, tok, batch_size, block_size, rank=rank, world_size=world_size,
                                 seed=seed, device=device)
    else:
        loader = SequentialLoader(train_data, batch_size, block_size, rank=rank, world_size=world_size,
                                       seed=seed, device=device)
    if init_from == 'resume':
        loader.load_state_dict(pre_ckpt['loader'])
except (ValueError, OSError) as e:
    _fail(str(e))
if init_from == 'resume' and pre_ckpt['step'] >= max_iters and not eval_only:
    if master:
        print(f"train.py: {run_dir / CKPT} is at step {pre_ckpt['step']} and max_iters={max_iters}: nothing to "
              f"do (the run folder is unchanged); pass a larger --max_iters to continue")
    if world_size > 1:
        dist.destroy_process_group()
    sys.exit(0)

# -----------------------------------------------------------------------------
# model: build (optionally on the meta device), activation checkpointing, DDP/FSDP2, compile
_mm_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float32
_peak = peak_flops(device, _mm_dtype)  # found now (on CPU: timed matmuls, RNG-neutral), logged in config.json
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
    mesh = _fsdp_mesh(world_size, fsdp_shard_size, device_type)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
if init_device == 'meta':  # materialise (each rank only its shards under FSDP2), then initialise
    model.to_empty(device=device)
    model.init_weights()
model.to(device)
raw_model = model  # the GPT itself (its parameters are DTensor shards under FSDP2): state dicts, generate
if parallelism == 'ddp':
    model = DDP(model, device_ids=[torch.device(device).index] if device_type == 'cuda' else None)
ddp_model = model  # the DDP wrapper itself (compile wraps it below): its gradient-sync switch
opt = optim.configure_optimizer(raw_model, optimizer=config['optimizer'], learning_rate=config['learning_rate'],
                                weight_decay=config['weight_decay'], betas=(config['beta1'], config['beta2']),
                                coupled_adam_avg_scale=config['coupled_adam_avg_scale'], device_type=device_type,
                                decay_token_embedding=config['decay_token_embedding'],
                                coupled_adam_embedding=config['coupled_adam_embedding'])
iter_num, tokens_seen, best_val_loss, nonfinite_skipped, wall_time_before = 0, 0, float('inf'), 0, 0.0
if pre_ckpt is not None and pre_ckpt.get('dcp'):  # sharded: each rank reads its slices (any world size)
    try:
        checkpoint.load_sharded(raw_model, opt if init_from == 'resume' else None, pre_ckpt)
    except CheckpointError as e:
        _fail(str(e))
elif pre_ckpt is not None or init_from.startswith('gpt2-hf:'):  # weights: checkpoint, or the HF model's
    weights = pre_ckpt['model'] if pre_ckpt is not None else hf_model.state_dict()
    weights = {k.removeprefix('_orig_mod.'): v for k, v in weights.items()}
    set_model_state_dict(raw_model, weights, options=StateDictOptions(full_state_dict=True))
    del weights
if init_from == 'resume':  # everything else: optimizer, step, data position, RNG
    # loading an optimizer state also loads its param_groups' hyper-parameters (weight_decay, betas, ...): keep
    # this config's, so a key set on the resume command line is the one that trains (unset keys are the run's own)
    hyper = [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups]
    try:
        if not pre_ckpt.get('dcp'):  # (a sharded one was loaded with the weights)
            set_optimizer_state_dict(raw_model, opt, pre_ckpt['optimizer'],
                                     options=StateDictOptions(full_state_dict=True))
    except (KeyError, ValueError, RuntimeError) as e:
        _fail(f"the optimizer state of {run_dir / CKPT} does not fit optimizer={config['optimizer']!r} "
              f"({type(e).__name__}): resume with the run's own optimizer settings")
    for group, h in zip(opt.param_groups, hyper, strict=True):
        group.update(h)
    iter_num, tokens_seen = pre_ckpt['step'], pre_ckpt['tokens']
    best_val_loss, nonfinite_skipped = pre_ckpt['best_val_loss'], pre_ckpt['nonfinite_skipped']
    wall_time_before = pre_ckpt['wall_time_s']
    if pre_ckpt['world_size'] == world_size:
        checkpoint.set_rng_state(pre_ckpt['rng'][rank])
    else:  # only dropout draws from these; nothing else in the loop is random
        torch.manual_seed(seed + rank + iter_num)
else:
    torch.manual_seed(seed + rank)  # per-rank dropout
del pre_ckpt
if compile:
    model = torch.compile(model)
log_unigram = losses.unigram_log_probs(train_data[:1 << 28], model_args['vocab_size']) if master else None

# -----------------------------------------------------------------------------
# run folder: every check has passed; only now is anything written
try:
    if master:
        run_dir.mkdir(parents=True, exist_ok=True)
        if init_from != 'resume':  # a new run (overwrite=True was checked above): the old run's files go
            for old in [run_dir / CKPT, *checkpoint.step_files(run_dir).values(), run_dir / 'summary.json']:
                old.unlink(missing_ok=True)
        checkpoint.write_json(run_dir / 'config.json', dict(
            config, git_commit=_git_commit(), torch_version=torch.__version__, world_size=world_size,
            grad_accum_per_rank=grad_accum, tokens_per_step=tokens_per_step, model_args=model_args,
            num_params=raw_model.num_params(), resumed_from_step=iter_num, peak_flops=_peak[0],
            peak_flops_source=_peak[1]))
        metrics_path = run_dir / 'metrics.jsonl'
        if init_from == 'resume' and metrics_path.exists():  # drop records the resumed run will write again
            keep = [ln for ln in metrics_path.read_text().splitlines()
                    if ln and json.loads(ln)['step'] <= iter_num]
            metrics_path.write_text(''.join(ln + '\n' for ln in keep))
        elif init_from != 'resume':
            metrics_path.unlink(missing_ok=True)
except (OSError, CheckpointError) as e:
    _fail(f"cannot write the run folder {run_dir}: {e}")
if wandb_log and master:
    try:
        import wandb
    except ImportError:
        _fail("wandb_log=True but wandb is not installed: `pip install wandb` or --wandb_log=False")
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
if master:
    print(f"{raw_model.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens/step ({world_size} "
          f"rank(s) x {grad_accum} micro-steps x {batch_size} x {block_size}), device {device}, "
          f"parallelism {parallelism}; MFU peak: {_peak[1]}")


# -----------------------------------------------------------------------------
# evaluation, checkpoints and logs (every name they read is assigned above)

def fixed_batches(split_data) -> callable:
    """Random windows of split_data, the same ones at every eval (own seeded generator: the training RNG is
    untouched), identical on every rank."""
    gen = torch.Generator().manual_seed(seed + 7)
    return lambda: get_batch(split_data, batch_size, block_size, gen, device)


def chat_batches(conversations: list) -> callable:
    """Chat batches in a fixed order (own loader and seed), the same at every eval."""
    return ChatLoader(conversations, tok, batch_size, block_size, seed=seed + 7, device=device).next_batch


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
    if chat:
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


def wall_time() -> float:
    return wall_time_before + time.time() - _t_start


def checkpoint_state(step: int, tokens: int, best_val_loss: float, nonfinite_skipped: int) -> dict | None:
    """The checkpoint dict (on rank 0; None elsewhere) of the run at `step`. Format 'full': under DDP/FSDP2 (any
    world size, 1 too) the full state dicts are gathered to rank 0's CPU (a collective every rank joins) as plain
    tensors keyed by parameter name, so tied weights and another world size load back (Modalities #348/#381).
    Format 'dcp': no gather; 'model' and 'optimizer' are None (save_sharded writes the shards)."""
    if checkpoint_format == 'dcp':
        model_sd = optim_sd = None
        local = [p.to_local() if hasattr(p, 'to_local') else p for p in raw_model.parameters()]
        finite = torch.stack([torch.isfinite(p).all() for p in local]).all().float().reshape(1)
        if world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        bad = [] if finite.item() else ['(a shard of) some parameter']
    else:
        opts = (StateDictOptions(full_state_dict=True, cpu_offload=True) if parallelism != 'none'
                else StateDictOptions())
        model_sd = get_model_state_dict(raw_model, options=opts)
        optim_sd = get_optimizer_state_dict(raw_model, opt, options=opts)
        bad = [k for k, v in model_sd.items() if not torch.isfinite(v).all()] if master else []
    rng = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(rng, checkpoint.rng_state())
    else:
        rng = [checkpoint.rng_state()]
    if bad:  # never overwrite a good checkpoint with a broken one
        raise SystemExit(f"train.py: refusing to checkpoint non-finite weights ({bad[:3]}) at step "
                         f"{step}; last good checkpoint: {run_dir / CKPT}")
    if not master:
        return None
    return {'model': model_sd and {k: v.cpu() for k, v in model_sd.items()}, 'optimizer': optim_sd, 'step': step,
            'schedule': {'name': schedule, 'step': step, 'lr': _lr(step, config)}, 'tokens': tokens,
            'best_val_loss': best_val_loss, 'nonfinite_skipped': nonfinite_skipped, 'wall_time_s': wall_time(),
            'loader': loader.state_dict(), 'rng': rng, 'world_size': world_size, 'config': dict(config),
            'model_args': model_args, 'data_identity': identity}


def save(reason: str, **progress) -> Path | None:
    """Checkpoint the run (progress: checkpoint_state's arguments; a collective under FSDP2); rank 0 writes it
    (format 'dcp': every rank writes its shards). A failed write (full or read-only disk) stops the run with one
    message; the previous ckpt.pt stays."""
    ckpt = checkpoint_state(**progress)
    try:
        if checkpoint_format == 'dcp':
            path = checkpoint.save_sharded(raw_model, opt, ckpt, run_dir, progress['step'], keep_last_k,
                                           debug_ckpt_sleep)
        elif master:
            path = checkpoint.save_checkpoint(ckpt, run_dir, progress['step'], keep_last_k,
                                              pause_s=debug_ckpt_sleep)
        if not master:
            return None
    except CheckpointError as e:
        _fail(str(e))
    tqdm.write(f"step {progress['step']}: saved {run_dir / CKPT} ({reason})")
    return path


def log_metrics(rec: dict) -> None:
    if master:
        try:
            with open(run_dir / 'metrics.jsonl', 'a') as f:
                f.write(json.dumps(_clean(rec)) + '\n')
        except OSError as e:
            _fail(f"cannot append to {run_dir / 'metrics.jsonl'}: {e.strerror or e}: free disk space or use a "
                  f"writable --out_dir (resume from {run_dir / CKPT} afterwards)")
        if wandb_log:
            wandb.log(_clean(rec), step=rec['step'])


def write_summary(finished: bool, diverged: bool, last_eval: dict, last_loss: float | None, step: int,
                  tokens: int, best_val_loss: float, nonfinite_skipped: int) -> None:
    """summary.json (rank 0): how the run ended, the last eval's values and the progress counters."""
    if master:
        final = {k: v for k, v in last_eval.items() if k not in ('step', 'tokens', 'train_loss', 'val_loss')}
        summary = dict(finished=finished, diverged=diverged, final_train_loss=last_eval.get('train_loss'),
                       final_val_loss=last_eval.get('val_loss'), best_val_loss=best_val_loss,
                       tokens=tokens, wall_time_s=wall_time(), step=step,
                       nonfinite_skipped=nonfinite_skipped, last_train_loss=last_loss, **final)
        try:
            checkpoint.write_json(run_dir / 'summary.json', _clean(summary))
        except CheckpointError as e:
            tqdm.write(f"train.py: {e}")


# SIGTERM/SIGINT: finish the current step, save a checkpoint, exit 0 (the flag is all-reduced every step,
# so every rank stops at the same step)
stop_signal = []
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda signum, frame: stop_signal.append(signal.Signals(signum).name))

# -----------------------------------------------------------------------------
# training loop
params = [p for p in raw_model.parameters() if p.requires_grad]
term_keys = ['ce'] + [k for k, lam in (('z_loss', z_loss), ('mu_loss', mu_loss)) if lam > 0]
last_eval, last_loss, last_ckpt = {}, None, (run_dir / CKPT) if init_from == 'resume' else None


def progress() -> dict:
    """The progress counters a checkpoint and summary.json record (read here, where the loop assigns them)."""
    return dict(step=iter_num, tokens=tokens_seen, best_val_loss=best_val_loss, nonfinite_skipped=nonfinite_skipped)


start_iter, stopping = iter_num, False
t_log, tokens_at_log = time.time(), tokens_seen
# device-side step state, read back only at log/eval points (no host sync per step): stop on the first
# non-finite step (halted: no step from then on) or skip such steps (counted); loss stats of that first step
halted = torch.zeros((), dtype=torch.bool, device=device)
first_bad = torch.zeros((), dtype=torch.long, device=device)  # 1-based step, 0 = none
skipped = torch.zeros((), dtype=torch.long, device=device)
skipped_before, bad_stats, tokens_pending = nonfinite_skipped, None, []
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
            last_ckpt = save('eval', **progress())
        t_log += time.time() - t_eval  # tokens/s counts training time only
    if iter_num >= max_iters or eval_only:
        break
    if stopping:  # decided from the all-reduced flag, so every rank saves at the same step
        save(f"stopped by {stop_signal[0]}", **progress())
        write_summary(False, False, last_eval, last_loss, **progress())
        if master:
            tqdm.write(f"stopped by {stop_signal[0]} at step {iter_num}; resume with --init_from=resume")
        break

    # one optimizer step = grad_accum micro-steps per rank. Every micro-step's loss is weighted by its share
    # of the global batch's trained tokens (all ranks), so loss and gradient are the mean over those tokens
    # however the batch is split (chat batches differ in their number of trained tokens)
    lr = _lr(iter_num, config)
    for group in opt.param_groups:
        group['lr'] = lr
    batches, trained, real_tokens = [], [], 0  # trained: targets in the loss; real: input tokens, no padding
    for _ in range(grad_accum):
        batches.append(loader.next_batch())
        trained.append(int((batches[-1][1] != IGNORE_INDEX).sum()) if chat else batches[-1][1].numel())
        real_tokens += loader.last_real_tokens if chat else batches[-1][0].numel()
    n_global = sum(trained) * world_size  # pretraining: every micro-batch has B x T targets
    if chat and world_size > 1:  # chat: the counts differ by rank
        counts = torch.tensor([sum(trained), real_tokens], dtype=torch.float64, device=device)
        dist.all_reduce(counts)
        n_global, real_tokens = int(counts[0].item()), int(counts[1].item())
    else:
        real_tokens *= world_size
    n_global = max(n_global, 1)
    stats = torch.zeros(len(term_keys) + 1, device=device)  # total loss, then the terms
    for micro_step, (x, y) in enumerate(batches):
        last_micro = micro_step == grad_accum - 1
        if parallelism == 'ddp':  # sync gradients only on the last micro-step (nanoGPT)
            ddp_model.require_backward_grad_sync = last_micro
        elif parallelism == 'fsdp':
            raw_model.set_requires_gradient_sync(last_micro or fsdp_reduce_every_micro_step)
        with autocast:  # the loss is computed inside the model's forward, so compile covers it
            loss, terms = model(x, targets=y, z_loss=z_loss, mu_loss=mu_loss)
        if iter_num + 1 == inject_nonfinite_at_step:
            loss = loss * float('inf')
        # gradients are averaged over ranks (DDP/FSDP), hence x world_size: the sum over ranks is the mean
        weight = trained[micro_step] * world_size / n_global
        (loss * weight).backward()
        stats += torch.stack([loss.detach().float()] + [terms[k].float() for k in term_keys]) * weight
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float('inf'))
    if hasattr(grad_norm, 'full_tensor'):
        grad_norm = grad_norm.full_tensor()
    # no host sync (the CPU runs ahead): the stop flag is filled on the device (no pageable copy), the finite check
    # and the skip happen on the device, values are read back at log/eval points only
    stats = torch.cat([stats / world_size, torch.full((1,), float(bool(stop_signal)), device=device)])
    if world_size > 1:
        dist.all_reduce(stats)  # loss = mean over the global batch; stop flag > 0 if any rank got a signal
    stats = torch.cat([stats, grad_norm.detach().float().reshape(1)])  # (loss, terms..., stop flag, grad norm)
    ok = torch.isfinite(stats).all()  # NaN/inf loss or grad norm: never step on it
    new_bad = ~ok & (first_bad == 0)
    first_bad = torch.where(new_bad, iter_num + 1, first_bad)
    bad_stats = stats if bad_stats is None else torch.where(new_bad, stats, bad_stats)
    halted = halted | ~ok
    step_ok = ok if skip_nonfinite else ~halted
    skipped = skipped + (~ok).long()
    _guarded_step(opt, step_ok)
    if mu_centering:  # OEC §1.4: after step + zero_grad, on the output embedding only (also when tied)
        _mu_centering_where(raw_model.output_embedding(), step_ok)
    iter_num += 1
    tokens_seen += real_tokens
    tokens_pending.append(real_tokens)
    pbar.update(1)
    if not (iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters):
        continue
    *vals, stop_flag, grad_norm_v, first_bad_v, skipped_v = torch.cat(
        [stats, torch.stack([first_bad, skipped]).float()]).tolist()  # the host sync of these steps
    stopping = stop_flag > 0
    if stopping and not stop_signal:
        stop_signal.append('a signal on another rank')
    if first_bad_v and not skip_nonfinite:  # no step was applied from first_bad on: stop there
        bad = bad_stats.tolist()
        n_after = iter_num - int(first_bad_v) + 1  # steps from the bad one on, none of them applied
        tokens_seen -= sum(tokens_pending[len(tokens_pending) - n_after:])
        iter_num, last_loss = int(first_bad_v) - 1, bad[0]
        where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint written yet"
        write_summary(False, True, last_eval, last_loss, **progress())
        pbar.close()
        raise SystemExit(f"train.py: non-finite loss {bad[0]} (grad norm {bad[-1]}) at step {iter_num + 1}; "
                         f"stopped without updating the weights; {where}. Lower learning_rate, add "
                         f"z_loss/mu_loss/mu_centering, or set skip_nonfinite=True")
    tokens_pending.clear()
    if skipped_before + int(skipped_v) > nonfinite_skipped:
        nonfinite_skipped = skipped_before + int(skipped_v)
        if master:
            tqdm.write(f"step {iter_num}: non-finite loss: batch skipped ({nonfinite_skipped} so far)")
    if math.isfinite(vals[0]):
        last_loss = vals[0]

    if iter_num % log_interval == 0 or iter_num == max_iters:  # step = steps done; loss = that of the last
        dt, t_log = time.time() - t_log, time.time()
        tok_s = (tokens_seen - tokens_at_log) / dt
        tokens_at_log = tokens_seen
        rec = dict(step=iter_num, tokens=tokens_seen, loss=vals[0], lr=lr, grad_norm=grad_norm_v,
                   tokens_per_sec=tok_s, mfu=raw_model.estimate_mfu(tok_s / world_size, device, block_size,
                                                                     _mm_dtype),
                   **dict(zip(term_keys, vals[1:])), nonfinite_skipped=nonfinite_skipped,
                   peak_mem_mb=(torch.cuda.max_memory_allocated(device) if device_type == 'cuda'
                                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20)
        log_metrics(rec)
        pbar.set_postfix(loss=f"{vals[0]:.4f}", lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}",
                         mfu=f"{rec['mfu']:.1%}")

pbar.close()
if iter_num >= max_iters and not stopping and not eval_only:
    write_summary(True, False, last_eval, last_loss, **progress())

# -----------------------------------------------------------------------------
# a sample from the trained model, on rank 0. FSDP2: generate() on the sharded model mixes Tensors and DTensors
# once a state-dict gather has resharded the root, so rank 0 samples from a plain GPT built from the gathered
# weights (the full model must fit on one device: set sample_tokens=0 for models that do not)
if sample_tokens > 0 and tok is not None and not stopping and (master or parallelism == 'fsdp'):
    sampler = raw_model
    if parallelism == 'fsdp':
        full = get_model_state_dict(raw_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if master:
            sampler = GPT(GPTConfig(**model_args)).to(device)
            sampler.load_state_dict(full)
        del full
    if master:
        torch.manual_seed(seed)
        sampler.eval()
        start = torch.tensor([[tok.eot]], device=device)
        with autocast:
            out = sampler.generate(start, sample_tokens, temperature=0.8, top_k=200)
        print('-' * 80 + '\n' + tok.decode(out[0, 1:].tolist()) + '\n' + '-' * 80)
if wandb_log and master:
    wandb.finish()
if world_size > 1:
    dist.destroy_process_group()
