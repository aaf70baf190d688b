"""
The pretraining loop: one process (CPU or GPU), DDP or FSDP2 under torchrun. nanoGPT's train.py, plus
the paper flags (norms, z-/mu-loss, mu-centering, Coupled Adam), exact resume and fault handling.

    python train.py                                          # tiny GPT on Shakespeare, a few CPU minutes
    python train.py config/oec_16m.py --learning_rate=3e-2   # a config file, then overrides
    python train.py --out_dir=out --init_from=resume         # continue exactly from out/ckpt.pt
    torchrun --standalone --nproc_per_node=8 train.py config/train_gpt2_124m.py --parallelism=fsdp

The run folder (out_dir) and the checkpoint format: checkpoint.py. The checks that run before any work:
train_checks.py; the eval loss: evaluation.py; FSDP2 sharding: parallel.py.
"""
import dataclasses
import math
import os
import resource
import signal
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
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoint
import data
import evaluation
import losses
import optim
import parallel
from chat import ChatLoader, load_chat_jsonl
from checkpoint import CKPT, CheckpointError
from configurator import configure
from hf import load_hf
from loader import SequentialLoader
from mfu import peak_flops
from model import GPT, MODEL_KEYS, GPTConfig, gpt_config_args
from optim import lr_at
from train_checks import (
    check_data_prepared,
    check_shape,
    check_writable,
    fail,
    validate,
)

# -----------------------------------------------------------------------------
# default config values: a tiny GPT on Shakespeare that trains in a few CPU minutes
# I/O
out_dir = 'out'  # the run folder: config.json, metrics.jsonl, ckpt.pt, summary.json (checkpoint.py)
eval_interval = 100  # [1, inf) steps between evaluations (and checkpoints)
log_interval = 10  # [1, inf) steps between log lines (console + metrics.jsonl)
eval_iters = 10  # [1, inf) batches per loss estimate
eval_only = False  # evaluate the initial model once and exit
always_save_checkpoint = True  # save at every eval; False = only when val loss improves (nanoGPT)
keep_last_k = 2  # [1, inf) ckpt_<step>.pt files kept; ckpt.pt is always the newest
checkpoint_format = 'full'  # 'full': one portable file, gathered on rank 0 (12 bytes/parameter: 75 GiB at 6.7B);
#   'dcp': sharded, every rank writes its shards (torch.distributed.checkpoint) to ckpt_<step>.dcp/ on a filesystem
#   all nodes share; resumes on any world size; `python checkpoint.py convert --out_dir=RUN --to=DIR` makes it 'full'
init_from = 'scratch'  # 'scratch' | 'resume' (out_dir/ckpt.pt) | 'hf:<HF folder>' (gpt2-hf: too) | 'finetune'
overwrite = False  # a new run into an out_dir that holds a checkpoint: True replaces that run, else stop
finetune_from = ''  # init_from='finetune': out_dir of the pretraining run whose ckpt.pt gives the weights
finetune_data = ''  # init_from='finetune': chat JSONL, {"messages": [{"role": "user"|"assistant", ...}]}
finetune_val_data = ''  # init_from='finetune': chat JSONL for val_loss; '' = the training conversations
sample_tokens = 200  # [0, inf) tokens sampled and printed at the end (0 = no sample)
wandb_log = False  # log to Weights & Biases (needs `pip install wandb`)
wandb_project = 'nanogpt'  # W&B project (wandb_log=True)
wandb_run_name = 'run'  # W&B run name (wandb_log=True)
# data
dataset = 'shakespeare'  # folder data_root/<dataset>; prepared on first use when data.py knows the name
data_root = 'data'  # dataset folders live in data_root/<dataset>
tokenizer = ''  # '' = the prepared folder's (new folders: data.py trains a BPE) | 'gpt2' | 'cl100k_base' | x.model
rebuild_dataset = False  # True: a tokenizer other than the prepared folder's rebuilds it in place (else: stop)
gradient_accumulation_steps = 1  # [1, inf) micro-steps per step over ALL ranks (nanoGPT: divided by world size)
batch_size = 16  # [1, inf) micro-batch size per rank, in sequences
block_size = 128  # [1, inf) context length in tokens
# model (model_preset sets all of these; a key you set explicitly overrides the preset)
model_preset = ''  # a model.PRESETS name: 'gpt2', 'gpt-sw3-356m', 'oec-16m', ...; '' = the keys below
n_layer = 4  # [1, inf) transformer blocks
n_head = 4  # [1, inf) attention heads (query heads under GQA)
n_kv_head = None  # [1, inf) None = n_head (multi-head); fewer = grouped-query attention
n_embd = 128  # [1, inf) model width (residual stream)
dropout = 0.0  # [0, 1) for pretraining 0 is good, for finetuning try 0.1+
bias = False  # bias in Linear layers and LayerNorm
norm = 'layernorm'  # 'layernorm' | 'rmsnorm' | 'dyt' | 'dyisru' | 'dyt_sp' | 'dyisru_sp'
norm_alpha0 = 0.5  # (0, inf) DyT alpha0 (DyISRU beta0 = 1/alpha0^2)
norm_alpha0_attn = None  # (0, inf) init of the post-attention norm ln_2; None = norm_alpha0
norm_init = None  # (-inf, inf) DyT/DyISRU raw alpha/beta at init, the DyISRU code's init_alpha/init_beta (not alpha0)
norm_init_attn = None  # (-inf, inf) the same for ln_2; None = norm_init
pos = 'learned'  # 'learned' | 'rope'
rope_theta = 10000.0  # (0, inf) RoPE base (Llama 3: 500000)
rope_fraction = 0.5  # (0, 1] share of each head's channels RoPE rotates (OEC: 0.5; Llama, Qwen3: 1.0)
mlp = 'gelu'  # 'gelu' | 'swiglu'
qk_norm = False  # normalise q and k per head (qk-LayerNorm)
tie_embeddings = True  # output embedding = input embedding (GPT-2)
init = 'normal'  # 'normal' (GPT-2, N(0, 0.02)) | 'xavier' (OEC)
logit_softcap = None  # (0, inf) c in c*tanh(logits/c) (OEC v2 uses 30); None = off
vocab_multiple = None  # [1, inf) pad the vocabulary to a multiple of this; None = 64 on CUDA (faster matmuls), 1 on CPU
# losses (OEC: Stollenwerk, Lokrantz, Hertzberg 2026, arXiv:2601.02031; authors' code nanoGPT/model.py, train.py)
z_loss = 0.0  # [0, inf) lambda of the z-loss, mean (log Z)^2 (PaLM, arXiv:2204.02311; 1e-4 in OEC)
mu_loss = 0.0  # [0, inf) lambda of the mu-loss, ||mean of output-embedding rows||^2 (OEC's mu-loss; 1e-4 in OEC)
mu_centering = False  # subtract the row mean from the output embedding after every step (OEC's mu-centering)
gauge_shift = 0.0  # (-inf, inf) OEC mechanism check: before this run's first step, add one vector to every
#   output-embedding row (optim.gauge_shift_, a gauge change) so the mean logit mu.h_bar on eval_iters train batches
#   is this value; 0 = off
# optimizer
optimizer = 'adamw'  # 'adamw' | 'coupled_adam' (Coupled Adam on one embedding matrix)
coupled_adam_embedding = 'output'  # coupled matrix: 'output' (lm_head) | 'input' (wte); tied: the same matrix
learning_rate = 2e-3  # [0, inf) max learning rate
max_iters = 500  # [0, inf) total optimizer steps
weight_decay = 0.1  # [0, inf) AdamW decoupled weight decay on the >=2-D weights
decay_token_embedding = True  # nanoGPT decays every >=2-D weight; False: not wte (Coupled Adam code's embdecay)
beta1 = 0.9  # [0, 1) AdamW first-moment decay
beta2 = 0.95  # [0, 1) AdamW second-moment decay
grad_clip = 1.0  # [0, inf) clip gradients at this norm, 0 = off (the norm is logged either way)
coupled_adam_avg_scale = 1.0  # (0, inf) Coupled Adam: scale of the averaged second moment
# learning rate schedule
decay_lr = True  # nanoGPT key: False = constant learning_rate (same as schedule='constant')
schedule = 'cosine'  # 'cosine' | 'wsd' | 'constant'; all with linear warmup
warmup_iters = 30  # [0, inf) steps of linear warmup
lr_decay_iters = 500  # [0, inf) cosine: steps until min_lr (~ max_iters per Chinchilla)
min_lr = 2e-4  # [0, inf) ~ learning_rate/10 per Chinchilla
wsd_decay_frac = 0.2  # [0, 1] wsd: fraction of max_iters spent decaying at the end
# system
device = 'cuda' if torch.cuda.is_available() else 'cpu'  # 'cpu' | 'cuda' | 'cuda:1' ...
dtype = 'bfloat16' if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else 'float32'  # or bf16
compile = None  # torch.compile the model (PyTorch 2); None = on for CUDA (nanoGPT's default), off on CPU
parallelism = 'none'  # 'none' | 'ddp' | 'fsdp' (FSDP2 fully_shard per block); ddp/fsdp need torchrun
fsdp_shard_size = 0  # [0, inf) HSDP: shard within groups of this many ranks (GPUs per node), replicate across; 0 = all
fsdp_reduce_every_micro_step = True  # FSDP2 + accumulation: reduce-scatter gradients at every micro-step, so only
#   gradient shards are held (lean); False = only at the last micro-step (fewer collectives, full fp32 gradients held)
tf32 = True  # CUDA fp32 matmuls/convolutions in TF32 (faster, 10-bit mantissa); False = exact fp32. No effect on CPU
activation_checkpointing = False  # recompute each block's activations in backward (less memory)
init_device = ''  # '' = build the model on `device`; 'meta' = build on meta, shard, then materialise
dist_timeout_s = 1800  # [1, inf) seconds a collective waits for the other ranks before the run stops
#   (init_process_group's timeout): raise it when rank 0 writes large checkpoints to a slow disk while the others wait
seed = 1337  # [0, inf) initial weights, data order, dropout (per rank: seed + rank)
skip_nonfinite = False  # on a NaN/inf loss or grad norm: skip the batch (counted) instead of stopping
inject_nonfinite_at_step = -1  # [-1, inf) debug/tests: multiply the loss of step N (1-based, as logged) by inf
debug_ckpt_sleep = 0.0  # [0, inf) debug/tests: seconds between writing the temp checkpoint and renaming it
# -----------------------------------------------------------------------------
config = configure(globals(), sys.argv[1:])
set_keys = config.set_keys  # the keys a config file or the command line set: they always win
_t_start = time.time()


def resolve(**values) -> None:
    """One config view: a value settled after the command line (a preset's model shape, this rank's device, ...)
    goes to config (config.json, checkpoints) and to the global the loop reads, never to only one of them."""
    config.update(values)
    globals().update(values)


# -----------------------------------------------------------------------------
# resume: the checkpoint's config, then every key you set; then every config check, before any work
world_size = int(os.environ.get('WORLD_SIZE', 1)) if parallelism != 'none' else 1
validate(config, set_keys, int(os.environ.get('WORLD_SIZE', 1)))
check_writable(out_dir)
try:  # resume/finetune: its checkpoint; a resume takes the run's own keys, checked again
    pre_ckpt = checkpoint.resolve_init(config, set_keys)
except CheckpointError as e:
    fail(str(e))
if config['init_from'] == 'resume':
    validate(config, set_keys, int(os.environ.get('WORLD_SIZE', 1)))
if not config['decay_lr']:
    config['schedule'] = 'constant'  # nanoGPT's decay_lr=False, recorded as what the run does
globals().update(config)  # the resolved values (inherited, finetune's data folder, schedule) as globals
chat = bool(finetune_data)  # chat fine-tuning (init_from='finetune', or the resume of such a run)
run_dir = Path(out_dir)
if parallelism == 'none' or int(os.environ.get('RANK', 0)) == 0:  # one run per folder: rank 0 holds its lock
    try:  # from before any write; a failed check releases it (fail), as does any exit
        checkpoint.lock_run_folder(out_dir)
    except CheckpointError as e:
        fail(str(e))
# SIGTERM before the training loop's own handler (below): stop at once, nothing to save, the lock released
signal.signal(signal.SIGTERM, lambda signum, frame: fail("stopped by SIGTERM before the first step (nothing saved)"))
if init_from != 'resume' and checkpoint.has_checkpoint(run_dir) and not overwrite:
    fail(f"out_dir={out_dir!r} holds another run's checkpoint: continue it with --init_from=resume, choose "
         f"a new --out_dir, or pass --overwrite=True to replace that run")
check_data_prepared(config, world_size, pre_ckpt is not None)

# -----------------------------------------------------------------------------
# distributed set-up
rank = int(os.environ.get('RANK', 0)) if world_size > 1 or parallelism != 'none' else 0
master = rank == 0
if master and init_from == 'resume':  # what differs from the run being resumed, said once
    for _line in checkpoint.resume_changes(config, pre_ckpt['config'], set_keys):
        print(f"train.py: resume: {_line}")
if parallelism != 'none':
    if device.startswith('cuda'):
        resolve(device=f"cuda:{os.environ.get('LOCAL_RANK', 0)}")
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.startswith('cuda') else 'gloo',
                            timeout=timedelta(seconds=dist_timeout_s))
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
# chat fine-tuning sums per-rank token counts every step: host numbers, so over a CPU (gloo) group, no device sync
host_group = dist.new_group(backend='gloo', timeout=timedelta(seconds=dist_timeout_s)) if chat and world_size > 1 \
    else None
if config['compile'] is None:  # on CUDA compile pays for itself within a few dozen steps; on CPU rarely
    config['compile'] = compile = device_type == 'cuda'
parallel.set_tf32(device_type, tf32)
if config['vocab_multiple'] is None:  # 64 on CUDA: tensor-core friendly lm_head shapes (nanoGPT's 50304)
    resolve(vocab_multiple=64 if device_type == 'cuda' else 1)
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
    # a given tokenizer other than the folder's stops the run, or with rebuild_dataset rebuilds the folder
    try:
        data.prepare_dataset(dataset, data_root=data_root, tokenizer=tokenizer or None,
                             rebuild_dataset=rebuild_dataset)
    except (ValueError, OSError) as e:
        fail(f"cannot prepare dataset {dataset!r} in {data_dir}: {e}")
if world_size > 1:  # a given tokenizer may make rank 0 rebuild the folder: wait for it without the 10-30 min
    dist.barrier(group=dist.new_group(backend='gloo', timeout=timedelta(hours=12)))  # collective timeout
try:
    meta = data.load_meta(data_dir)
    train_data = data.load_tokens(data_dir, 'train')  # checked against meta.json's length and dtype
    val_data = data.load_tokens(data_dir, 'val')
    identity = data.dataset_identity(data_dir)
    tok = data.dataset_tokenizer(data_dir) if meta.get('tokenizer') else None
except (ValueError, OSError) as e:
    fail(f"dataset {str(data_dir)!r}: {e}")
identity['chat_sha256'] = data.file_sha256(finetune_data) if finetune_data else None
if pre_ckpt is not None and pre_ckpt.get('data_identity'):  # finetune: a new chat file is the point
    changed = data.identity_changes(pre_ckpt['data_identity'], identity, data_dir, finetune_data,
                                    with_chat=init_from == 'resume')
    if changed:
        fail(f"{', '.join(changed)} changed since the checkpoint {finetune_from or out_dir} was written "
             f"(identity hashes differ): restore the data the run trained on, or start a new run with "
             f"init_from='scratch'; to score the run on other data: python evaluation.py "
             f"--out_dir={finetune_from or out_dir} --datasets={dataset}")
data_vocab = meta.get('vocab_size') or 50304  # nanoGPT folder without meta.pkl: GPT-2 tokens, padded
if chat and tok is None:
    fail(f"init_from='finetune' needs the tokenizer of the pretraining data, but {data_dir} records none "
         f"(nanoGPT layout): pretrain on a dataset prepared by data.py")

# -----------------------------------------------------------------------------
# model args: preset, then every model key you set; or the checkpoint's / HF folder's shape. Shape checks
if pre_ckpt is not None:
    model_args = dataclasses.asdict(GPTConfig(**pre_ckpt['model_args']))  # model keys added since: their defaults
    check_shape(model_args, config, set_keys, f"the checkpoint of {finetune_from or out_dir}")
    model_args['dropout'] = dropout  # resume: the run's own (inherited); finetune: this config's
elif init_from.startswith(('gpt2-hf:', 'hf:')):  # GPT-2, Llama, Qwen3, GLM(-4-MoE), StableLM (hf.load_hf)
    try:
        hf_model = load_hf(init_from.split(':', 1)[1], dropout=dropout)
    except (ValueError, OSError) as e:
        fail(f"init_from={init_from!r}: {e}")
    model_args = dataclasses.asdict(hf_model.config)  # weights are copied below
    check_shape(model_args, config, set_keys, f"the Hugging Face folder {init_from.split(':', 1)[1]}")
else:
    model_args = gpt_config_args(config, set_keys, data_vocab)
if 'block_size' not in set_keys and init_from != 'resume':
    block_size = model_args['block_size']  # the model's context (a preset's, the checkpoint's, HF's)
if block_size > model_args['block_size']:
    fail(f"block_size={block_size} is longer than the model's context {model_args['block_size']}: use "
         f"--block_size={model_args['block_size']} or less")
resolve(**{k: model_args[k] for k in MODEL_KEYS if k != 'block_size'}, block_size=block_size)
config['tokenizer_spec'] = tok.name if tok else None  # the tokenizer actually used (sample.py reads it)
config['data_identity'] = identity
try:
    GPTConfig(**model_args)
except ValueError as e:
    fail(str(e))
if data_vocab > model_args['vocab_size']:
    fail(f"the data's vocabulary ({data_vocab}) is larger than the model's ({model_args['vocab_size']})")
tokens_per_step = grad_accum * world_size * batch_size * block_size  # token slots; chat counts real tokens
if len(val_data) <= block_size:
    fail(f"{data_dir}/val.bin has {len(val_data)} tokens, not more than block_size={block_size}: "
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
    fail(str(e))
if init_from == 'resume' and pre_ckpt['step'] >= max_iters and not eval_only:
    if master:
        print(f"train.py: {run_dir / CKPT} is at step {pre_ckpt['step']} and max_iters={max_iters}: nothing to "
              f"do (the run folder is unchanged); pass a larger --max_iters to continue")
    checkpoint.release_run_folders()
    if world_size > 1:
        dist.destroy_process_group()
    sys.exit(0)

# -----------------------------------------------------------------------------
# model: build (optionally on the meta device), activation checkpointing, DDP/FSDP2, compile
_mm_dtype = torch.bfloat16 if dtype == 'bfloat16' else torch.float32
_peak = peak_flops(device, _mm_dtype)  # (FLOP/s or None on CPU, source): fixed for the run, in config.json
torch.manual_seed(seed)  # the same initial weights on every rank (FSDP2 shards them, DDP checks them)
if init_device == 'meta':
    with torch.device('meta'):
        model = GPT(GPTConfig(**model_args))
else:
    model = GPT(GPTConfig(**model_args))
if activation_checkpointing:  # per block: keep only each block's input, recompute the rest in backward
    for block in model.transformer.h:
        block.forward = partial(torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False)
if parallelism == 'fsdp':  # FSDP2 (HSDP with fsdp_shard_size): one unit per block + the root
    parallel.shard_gpt(model, parallel.fsdp_mesh(world_size, fsdp_shard_size, device_type))
if init_device == 'meta':  # materialise (each rank only its shards under FSDP2), then initialise
    model.to_empty(device=device)
    model.init_weights()
model.to(device)
raw_model = model  # the GPT itself (its parameters are DTensor shards under FSDP2): state dicts, generate
if parallelism == 'ddp':
    model = DDP(model, device_ids=[torch.device(device).index] if device_type == 'cuda' else None)
ddp_model = model  # the DDP wrapper itself (compile wraps it below): its gradient-sync switch
opt = optim.run_optimizer(raw_model, config, device_type)  # checkpoint.py convert builds the same
iter_num, tokens_seen, best_val_loss, nonfinite_skipped, wall_time_before = 0, 0, float('inf'), 0, 0.0
# loading an optimizer state (full or sharded) also loads its param_groups' hyper-parameters (weight_decay, betas,
# ...): this config's are restored after it, so a key set on the resume command line is the one that trains
hyper = [{k: v for k, v in g.items() if k != 'params'} for g in opt.param_groups]
if pre_ckpt is not None and pre_ckpt.get('dcp'):  # sharded: each rank reads its slices (any world size)
    try:
        checkpoint.load_sharded(raw_model, opt if init_from == 'resume' else None, pre_ckpt)
    except CheckpointError as e:
        fail(str(e))
elif pre_ckpt is not None or init_from.startswith(('gpt2-hf:', 'hf:')):  # weights: checkpoint, or the HF model's
    weights = pre_ckpt['model'] if pre_ckpt is not None else hf_model.state_dict()
    weights = {k.removeprefix('_orig_mod.'): v for k, v in weights.items()}
    set_model_state_dict(raw_model, weights, options=StateDictOptions(full_state_dict=True))
    del weights
if init_from == 'resume':  # everything else: optimizer, step, data position, RNG
    try:
        if not pre_ckpt.get('dcp'):  # (a sharded one was loaded with the weights)
            set_optimizer_state_dict(raw_model, opt, pre_ckpt['optimizer'],
                                     options=StateDictOptions(full_state_dict=True))
    except (KeyError, ValueError, RuntimeError) as e:
        fail(f"the optimizer state of {run_dir / CKPT} does not fit optimizer={config['optimizer']!r} "
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
# a resumed run whose checkpoint is already shifted is not shifted again (a continued start_run of sweep.py is)
gauge_shifted = bool(init_from == 'resume' and pre_ckpt.get('gauge_shifted'))
del pre_ckpt
if gauge_shift and not gauge_shifted:  # config/oec_mechanism.py: inject the mean logit the paper's baselines reach
    if model_args['tie_embeddings']:
        fail("gauge_shift needs an untied output embedding (tie_embeddings=False): a tied matrix is also the input "
             "embedding, so the shift would change the model, not only the gauge")
    raw_model.eval()
    with torch.no_grad():  # h_bar in fp32 (no autocast): the mean logit the weights give, before any rounding
        shift_batch = evaluation.fixed_batches(train_data, batch_size, block_size, seed + 7, device)
        h_bar = torch.stack([raw_model.hidden_states(shift_batch()[0]).double().mean(dim=(0, 1))
                             for _ in range(eval_iters)]).mean(dim=0)  # (C,)
    raw_model.train()
    try:
        shift = optim.gauge_shift_(raw_model.output_embedding(), h_bar, gauge_shift)
    except ValueError as e:
        fail(str(e))
    gauge_shifted = 'now'
    if master:
        print(f"gauge shift at step {iter_num}: every output-embedding row + c, ||c|| = {shift.norm():.2f}, so "
              f"that mu.h_bar = {gauge_shift} (||h_bar|| = {h_bar.norm():.3f})")
if compile:
    model = torch.compile(model)
log_unigram = losses.unigram_log_probs(train_data[:1 << 28], model_args['vocab_size']) if master else None

# -----------------------------------------------------------------------------
# run folder: every check has passed; only now is anything written
try:
    if master:
        checkpoint.start_run_folder(run_dir, dict(
            config, git_commit=checkpoint.git_commit(), torch_version=torch.__version__, world_size=world_size,
            grad_accum_per_rank=grad_accum, tokens_per_step=tokens_per_step, model_args=model_args,
            num_params=raw_model.num_params(), resumed_from_step=iter_num, peak_flops=_peak[0],
            peak_flops_source=_peak[1]), resume_step=iter_num if init_from == 'resume' else None)
except (OSError, CheckpointError) as e:
    fail(f"cannot write the run folder {run_dir}: {e}")
if wandb_log and master:
    try:
        import wandb
    except ImportError:
        fail("wandb_log=True but wandb is not installed: `pip install wandb` or --wandb_log=False")
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)
if master:
    print(f"{raw_model.num_params() / 1e6:.2f}M parameters, {tokens_per_step:,} tokens/step ({world_size} "
          f"rank(s) x {grad_accum} micro-steps x {batch_size} x {block_size}), device {device}, "
          f"parallelism {parallelism}; " + (f"MFU peak: {_peak[1]}" if _peak[0] else _peak[1]))  # once


# -----------------------------------------------------------------------------
# evaluation, checkpoints and logs (every name they read is assigned above)

def evaluate() -> dict:
    """The eval record: train/val loss, per-language val loss and bits per byte (val_<lang>.bin), the logit
    diagnostics on a few val batches and the output-embedding geometry (losses.py: the OEC and Coupled Adam
    authors' metrics), what the mean logit is made of (|h_bar|, mu.h_bar: losses.hidden_diagnostics) and the mean
    gain of the final norm ln_f (final_norm_gain_mean: a collapsing gain shrinks h_bar and with it mu.h_bar).
    Fine-tuning: train/val loss on chat batches (assistant tokens only), pretrain_val_loss on val.bin."""
    weight, gain = raw_model.output_embedding(), raw_model.transformer.ln_f.weight
    if hasattr(weight, 'full_tensor'):  # FSDP2 DTensor shards -> the whole tensors (a collective)
        weight, gain = weight.full_tensor(), gain.full_tensor()
    # the eager model (raw_model; DDP is not needed without gradients): compiling the eval forward (no_grad, eval
    # mode) would be a second graph, compiled at the step-0 eval (docs/training.md: what that costs, and why not)
    loss = partial(evaluation.estimate_loss, raw_model, n_batches=eval_iters, autocast=autocast, rank=rank,
                   world_size=world_size, device=device)
    windows = partial(evaluation.fixed_batches, batch_size=batch_size, block_size=block_size, seed=seed + 7,
                      device=device)
    rec, n_diag = {}, min(4, eval_iters)
    if chat:
        conversations = partial(evaluation.chat_batches, tok=tok, batch_size=batch_size, block_size=block_size,
                                seed=seed + 7, device=device)
        rec['train_loss'], _ = loss(conversations(chats))
        rec['val_loss'], rec_diag = loss(conversations(val_chats), diagnostics=n_diag, output_embedding=weight)
        rec['pretrain_val_loss'], _ = loss(windows(val_data))
    else:
        rec['train_loss'], _ = loss(windows(train_data))
        rec['val_loss'], rec_diag = loss(windows(val_data), diagnostics=n_diag, output_embedding=weight)
    for lang, (lang_data, tokens_per_byte) in val_langs.items():
        rec[f'val_loss/{lang}'], _ = loss(windows(lang_data))
        if tokens_per_byte:  # bits per byte = nats/token / ln 2 * tokens/byte: comparable across tokenizers
            rec[f'val_bpb/{lang}'] = rec[f'val_loss/{lang}'] / math.log(2) * tokens_per_byte
    if master:
        rec.update(rec_diag, final_norm_gain_mean=gain.detach().float().mean().item())
        rec.update(losses.embedding_diagnostics(weight, log_unigram))
    return rec


def wall_time() -> float:
    return wall_time_before + time.time() - _t_start


def checkpoint_state(step: int, tokens: int, best_val_loss: float, nonfinite_skipped: int) -> dict | None:
    """The checkpoint dict (on rank 0; None elsewhere) of the run at `step`; a collective every rank joins
    (checkpoint.gather_state). Never a checkpoint of non-finite weights: that stops the run instead."""
    model_sd, optim_sd, rng, bad = checkpoint.gather_state(raw_model, opt, checkpoint_format, parallelism != 'none',
                                                           world_size, rank)
    if bad:  # never overwrite a good checkpoint with a broken one
        fail(f"refusing to checkpoint non-finite weights ({bad[:3]}) at step {step}; last good checkpoint: "
             f"{run_dir / CKPT}")
    if not master:
        return None
    return {'model': model_sd, 'optimizer': optim_sd, 'step': step,
            'schedule': {'name': schedule, 'step': step, 'lr': lr_at(step, config)}, 'tokens': tokens,
            'best_val_loss': best_val_loss, 'nonfinite_skipped': nonfinite_skipped, 'wall_time_s': wall_time(),
            'loader': loader.state_dict(), 'rng': rng, 'world_size': world_size, 'config': dict(config),
            'model_args': model_args, 'data_identity': identity, 'gauge_shifted': bool(gauge_shifted)}


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
        fail(str(e))
    tqdm.write(f"step {progress['step']}: saved {run_dir / CKPT} ({reason})")
    return path


def log_metrics(rec: dict) -> None:
    """One record to metrics.jsonl (and W&B), rank 0; a failed write stops the run."""
    if master:
        try:
            checkpoint.append_metrics(run_dir, rec)
        except CheckpointError as e:
            fail(str(e))
        if wandb_log:
            wandb.log(checkpoint.json_safe(rec), step=rec['step'])


def write_summary(finished: bool, diverged: bool, last_eval: dict, last_loss: float | None, **progress) -> None:
    """summary.json (rank 0; progress: the progress() counters); a failed write is reported, the run ends anyway."""
    if master:
        try:
            checkpoint.write_summary(run_dir, finished, diverged, last_eval, last_loss, wall_time(), **progress)
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
loss_weights = {k: config[k] for k in losses.LOSS_TERMS}  # lambda of each loss term, by its config key
term_keys = ['ce'] + [k for k, lam in loss_weights.items() if lam > 0]  # the terms compute_loss returns, logged
# the step's statistics, summed over micro-steps and all-reduced as one tensor, read back by these names
stat_keys = ['loss', *term_keys, 'stop', 'grad_norm']
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
    # (a run shifted at this launch evaluates at its first step: the loss right after the shift)
    just_shifted = gauge_shifted == 'now' and iter_num == start_iter
    if (iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only or just_shifted) and not (
            init_from == 'resume' and iter_num == start_iter and not eval_only and not just_shifted):
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
    lr = lr_at(iter_num, config)
    for group in opt.param_groups:
        group['lr'] = lr
    batches, trained, real_tokens = [], [], 0  # trained: targets in the loss; real: input tokens, no padding
    for _ in range(grad_accum):
        batches.append(loader.next_batch())
        trained.append(loader.last_trained_tokens if chat else batches[-1][1].numel())  # counted on the host
        real_tokens += loader.last_real_tokens if chat else batches[-1][0].numel()
    n_global = sum(trained) * world_size  # pretraining: every micro-batch has B x T targets
    if chat and world_size > 1:  # chat: the counts differ by rank; summed on the host (gloo), no device sync
        n_global, real_tokens = parallel.host_sum([sum(trained), real_tokens], host_group)
    else:
        real_tokens *= world_size
    n_global = max(n_global, 1)
    stats = torch.zeros(len(term_keys) + 1, device=device)  # stat_keys up to 'stop': loss, then the terms
    for micro_step, (x, y) in enumerate(batches):
        last_micro = micro_step == grad_accum - 1
        if parallelism == 'ddp':  # sync gradients only on the last micro-step (nanoGPT)
            ddp_model.require_backward_grad_sync = last_micro
        elif parallelism == 'fsdp':
            raw_model.set_requires_gradient_sync(last_micro or fsdp_reduce_every_micro_step)
        with autocast:  # the loss is computed inside the model's forward, so compile covers it
            loss, terms = model(x, targets=y, **loss_weights)
        if iter_num + 1 == inject_nonfinite_at_step:
            loss = loss * float('inf')
        # gradients are averaged over ranks (DDP/FSDP), hence x world_size: the sum over ranks is the mean
        weight = trained[micro_step] * world_size / n_global
        (loss * weight).backward()
        stats += torch.stack([dict(terms, loss=loss.detach())[k].float() for k in stat_keys[:-2]]) * weight
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float('inf'))
    if hasattr(grad_norm, 'full_tensor'):
        grad_norm = grad_norm.full_tensor()
    # no host sync (the CPU runs ahead): the stop flag is filled on the device (no pageable copy), the finite check
    # and the skip happen on the device, values are read back at log/eval points only
    stats = torch.cat([stats / world_size, torch.full((1,), float(bool(stop_signal)), device=device)])
    if world_size > 1:
        dist.all_reduce(stats)  # loss = mean over the global batch; stop flag > 0 if any rank got a signal
    stats = torch.cat([stats, grad_norm.detach().float().reshape(1)])  # (len(stat_keys),)
    ok = torch.isfinite(stats).all()  # NaN/inf loss or grad norm: never step on it
    new_bad = ~ok & (first_bad == 0)
    first_bad = torch.where(new_bad, iter_num + 1, first_bad)
    bad_stats = stats if bad_stats is None else torch.where(new_bad, stats, bad_stats)
    halted = halted | ~ok
    step_ok = ok if skip_nonfinite else ~halted
    skipped = skipped + (~ok).long()
    optim.guarded_step(opt, step_ok)
    if mu_centering:  # OEC code nanoGPT/train.py: after step + zero_grad, on the output embedding only (also when tied)
        optim.mu_centering_where_(raw_model.output_embedding(), step_ok)
    iter_num += 1
    tokens_seen += real_tokens
    tokens_pending.append(real_tokens)
    pbar.update(1)
    if not (iter_num % log_interval == 0 or iter_num % eval_interval == 0 or iter_num >= max_iters):
        continue
    vals = dict(zip([*stat_keys, 'first_bad', 'skipped'], torch.cat(
        [stats, torch.stack([first_bad, skipped]).float()]).tolist(), strict=True))  # the host sync of these steps
    stopping = vals['stop'] > 0
    if stopping and not stop_signal:
        stop_signal.append('a signal on another rank')
    if vals['first_bad'] and not skip_nonfinite:  # no step was applied from first_bad on: stop there
        bad = dict(zip(stat_keys, bad_stats.tolist(), strict=True))
        n_after = iter_num - int(vals['first_bad']) + 1  # steps from the bad one on, none of them applied
        tokens_seen -= sum(tokens_pending[len(tokens_pending) - n_after:])
        iter_num, last_loss = int(vals['first_bad']) - 1, bad['loss']
        where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint written yet"
        write_summary(False, True, last_eval, last_loss, **progress())
        pbar.close()
        fail(f"non-finite loss {bad['loss']} (grad norm {bad['grad_norm']}) at step {iter_num + 1}; stopped without "
             f"updating the weights; {where}. Lower learning_rate, add z_loss/mu_loss/mu_centering, or set "
             f"skip_nonfinite=True")
    tokens_pending.clear()
    if skipped_before + int(vals['skipped']) > nonfinite_skipped:
        nonfinite_skipped = skipped_before + int(vals['skipped'])
        if master:
            tqdm.write(f"step {iter_num}: non-finite loss: batch skipped ({nonfinite_skipped} so far)")
    if math.isfinite(vals['loss']):
        last_loss = vals['loss']

    if iter_num % log_interval == 0 or iter_num == max_iters:  # step = steps done; loss = that of the last
        dt, t_log = time.time() - t_log, time.time()
        tok_s = (tokens_seen - tokens_at_log) / dt
        tokens_at_log = tokens_seen
        mfu = raw_model.estimate_mfu(tok_s / world_size, device, block_size, _mm_dtype)  # None on CPU
        rec = dict(step=iter_num, tokens=tokens_seen, loss=vals['loss'], lr=lr, grad_norm=vals['grad_norm'],
                   tokens_per_sec=tok_s, **({} if mfu is None else dict(mfu=mfu)),
                   **{k: vals[k] for k in term_keys}, nonfinite_skipped=nonfinite_skipped,
                   peak_mem_mb=(torch.cuda.max_memory_allocated(device) if device_type == 'cuda'
                                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20)
        log_metrics(rec)
        pbar.set_postfix(loss=f"{vals['loss']:.4f}", lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}",
                         **({} if mfu is None else dict(mfu=f"{mfu:.1%}")))

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
checkpoint.release_run_folders()  # (also at exit; here for a run inside another process, as tests do)
