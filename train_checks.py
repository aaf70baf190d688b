"""
The checks train.py runs on its config before any work, each ending the run with one message that names the
key (or file) and the fix (fail): choices, ranges and contradictions between keys and the launch environment
(validate), a data folder torchrun cannot prepare (check_data_prepared), the loaded weights' shape against the
keys you set (check_shape), out_dir (check_writable). What the checks read or derive lives with its concern:
which keys a resumed run takes from its checkpoint in checkpoint.py (resolve_init; train.py validates the result
again), the model's GPTConfig kwargs in model.py (gpt_config_args), the learning rate of a step in optim.py
(lr_at).
"""
import math
import os
from pathlib import Path

import torch

import checkpoint
import optim
from checkpoint import CKPT
from configurator import ConfigError, check_output_path
from losses import LOSS_TERMS
from model import MODEL_KEYS, PRESETS, GPTConfig, gpt_config_args


def fail(msg: str) -> None:
    """Stop before any work with one clear message (every rank raises it, so torchrun exits cleanly)."""
    checkpoint.release_run_folders()  # the run folder's lock (rank 0), and the folder if the lock made it
    raise SystemExit(f"train.py: {msg}")


def validate(cfg: dict, set_keys: frozenset, world_size: int) -> None:
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
            fail(f"{key}={cfg[key]!r} is not one of {allowed}{hint}: fix --{key}")
    for key in (*LOSS_TERMS, 'weight_decay', 'grad_clip', 'learning_rate', 'min_lr', 'dropout',
                'max_iters', 'warmup_iters', 'lr_decay_iters', 'sample_tokens'):
        if cfg[key] < 0:
            fail(f"{key}={cfg[key]} is negative: use 0 (off) or a positive value")
        if not math.isfinite(cfg[key]) or cfg[key] > torch.finfo(torch.float32).max:  # nan slips past '< 0'
            fail(f"{key}={cfg[key]} is not a finite float32 value: set --{key} to a number below 3.4e38")
    for key in ('batch_size', 'block_size', 'gradient_accumulation_steps', 'eval_interval', 'log_interval',
                'eval_iters', 'keep_last_k', 'dist_timeout_s'):
        if cfg[key] < 1:
            fail(f"{key}={cfg[key]} must be >= 1: set --{key} to 1 or more")
    if cfg['vocab_multiple'] is not None and (not isinstance(cfg['vocab_multiple'], int) or cfg['vocab_multiple'] < 1):
        fail(f"vocab_multiple={cfg['vocab_multiple']!r} must be an integer >= 1: set --vocab_multiple to 1 or "
             f"more, or None (64 on CUDA, 1 on CPU)")
    if cfg['compile'] not in (None, True, False):  # a None default parses --compile=false as the string 'false'
        fail(f"compile={cfg['compile']!r} is not True, False or None (None: on for CUDA, off on CPU): use "
             f"--compile=True or --compile=False")
    shard = cfg['fsdp_shard_size']
    if shard and (cfg['parallelism'] != 'fsdp' or shard < 0 or world_size % shard):
        fail(f"fsdp_shard_size={shard} needs --parallelism=fsdp and must divide the world size {world_size} "
             f"(HSDP: shard within groups of that many ranks, e.g. the GPUs of one node); 0 = plain FSDP2")
    for key in ('beta1', 'beta2'):
        if not 0 <= cfg[key] < 1:
            fail(f"{key}={cfg[key]} must be in [0, 1) (AdamW's moment decay): e.g. --beta1=0.9 --beta2=0.95")
    if cfg['min_lr'] > cfg['learning_rate']:
        fail(f"min_lr={cfg['min_lr']} is above learning_rate={cfg['learning_rate']}: the schedule would rise; "
             f"set --min_lr <= --learning_rate (usually learning_rate/10)")
    if not math.isfinite(cfg['gauge_shift']) or (cfg['gauge_shift'] and cfg['parallelism'] == 'fsdp'):
        fail(f"gauge_shift={cfg['gauge_shift']} must be a finite mean logit (0 = off), and runs without "
             f"--parallelism=fsdp (its h_bar is computed on the whole model): fix --gauge_shift or --parallelism")
    if cfg['coupled_adam_avg_scale'] <= 0:
        fail(f"coupled_adam_avg_scale={cfg['coupled_adam_avg_scale']} must be > 0 (1.0 = the paper)")
    if not cfg['decay_lr'] and cfg['schedule'] != 'constant' and 'schedule' in set_keys:
        fail(f"decay_lr=False asks for a constant learning rate but schedule={cfg['schedule']!r} decays it: "
             f"drop one of --decay_lr=False and --schedule={cfg['schedule']}")
    if cfg['logit_softcap'] is not None and cfg['logit_softcap'] <= 0:
        fail(f"logit_softcap={cfg['logit_softcap']} must be > 0 (OEC v2 uses 30) or None (off)")
    if cfg['model_preset'] and cfg['model_preset'] not in PRESETS:
        fail(f"model_preset={cfg['model_preset']!r} is unknown: use one of {sorted(PRESETS)}")
    if cfg['init_from'] == 'scratch':  # the model keys' own checks (shape, choices), before the data
        try:
            GPTConfig(**gpt_config_args(cfg, set_keys, vocab_size=1))
        except ValueError as e:
            fail(str(e))
    if not (cfg['init_from'] in ('scratch', 'resume', 'finetune') or cfg['init_from'].startswith(('gpt2-hf:', 'hf:'))):
        fail(f"init_from={cfg['init_from']!r}: use 'scratch', 'resume', 'finetune' or 'hf:<folder>' "
             f"(a local Hugging Face GPT-2, Llama, Qwen3, GLM, GLM-4-MoE or StableLM folder; nothing is downloaded)")
    if cfg['init_from'] == 'finetune' and not (cfg['finetune_from'] and cfg['finetune_data']):
        fail("init_from='finetune' needs --finetune_from=<pretraining out_dir> and "
             "--finetune_data=<chat.jsonl>")
    if cfg['init_from'] not in ('finetune', 'resume'):
        for key in ('finetune_from', 'finetune_data', 'finetune_val_data'):
            if cfg[key]:
                fail(f"{key} is used only with init_from='finetune': add --init_from=finetune or drop --{key}")
    for key in ('finetune_data', 'finetune_val_data'):
        if cfg[key] and not Path(cfg[key]).is_file():
            fail(f"{key}={cfg[key]!r} not found: give a chat JSONL file")
    if cfg['init_from'] == 'finetune' and not (Path(cfg['finetune_from']) / CKPT).is_file():
        fail(f"finetune_from={cfg['finetune_from']!r} has no {CKPT}: point it at a pretraining out_dir")
    if cfg['init_from'] == 'resume' and not (Path(cfg['out_dir']) / CKPT).is_file():
        fail(f"init_from='resume' but {cfg['out_dir']}/{CKPT} does not exist"
             + (checkpoint.missing_latest(cfg['out_dir']) or ": check --out_dir or use init_from='scratch'"))
    if cfg['init_from'] in ('resume', 'finetune') and 'tokenizer' in set_keys:
        fail(f"init_from={cfg['init_from']!r} trains with the checkpoint's tokenizer and data: drop "
             f"--tokenizer (or start a new run with init_from='scratch')")
    if cfg['device'].startswith('cuda') and not torch.cuda.is_available():
        fail(f"device={cfg['device']!r} but CUDA is not available: use --device=cpu")
    in_torchrun = 'RANK' in os.environ and 'WORLD_SIZE' in os.environ
    if cfg['parallelism'] != 'none' and not in_torchrun:
        fail(f"parallelism={cfg['parallelism']!r} needs torchrun's environment (RANK, WORLD_SIZE): launch "
             f"with `torchrun --nproc_per_node=N train.py ...`, or use --parallelism=none for one process")
    if cfg['parallelism'] == 'none' and in_torchrun and world_size > 1:
        fail(f"torchrun started {world_size} processes but parallelism='none': add --parallelism=ddp or "
             f"--parallelism=fsdp")
    if cfg['gradient_accumulation_steps'] % world_size:
        fail(f"gradient_accumulation_steps={cfg['gradient_accumulation_steps']} is the global number of "
             f"micro-steps (nanoGPT meaning) and must be divisible by the world size {world_size}: global "
             f"batch = gradient_accumulation_steps x batch_size must split evenly over ranks x micro batch; "
             f"use a multiple of {world_size}")
    try:  # the schedule's own checks (optim.get_lr raises on settings that leave no decay phase, ...)
        optim.lr_at(0, cfg), optim.lr_at(cfg['max_iters'], cfg)
    except ValueError as e:
        fail(str(e))


def check_data_prepared(cfg: dict, world_size: int, resuming: bool) -> None:
    """Under torchrun, rank 0 preparing a large dataset while the other ranks wait at a barrier times out
    (NCCL/gloo default 10-30 min): a missing folder is prepared beforehand, in one process."""
    data_dir = Path(cfg['data_root']) / cfg['dataset']
    if world_size > 1 and not resuming and not (data_dir / 'train.bin').is_file():
        tok = f" --tokenizer={cfg['tokenizer']}" if cfg['tokenizer'] else ''
        fail(f"{data_dir} is not prepared, and preparing it under torchrun would time out the waiting ranks: "
             f"run `python data.py prepare --dataset={cfg['dataset']} --data_root={cfg['data_root']}{tok}` "
             f"once, then this command again")


def check_shape(model_args: dict, cfg: dict, set_keys: frozenset, source: str) -> None:
    """A model key you set that the loaded weights (checkpoint or HF folder) contradict stops the run."""
    asked = {k: cfg[k] for k in MODEL_KEYS if k in set_keys and k not in ('dropout', 'block_size')}
    if 'model_preset' in set_keys and cfg['model_preset']:
        asked = {k: v for k, v in PRESETS[cfg['model_preset']].items() if k in MODEL_KEYS} | asked
    diff = {k: (model_args.get(k), v) for k, v in asked.items() if k in model_args and model_args[k] != v}
    if diff:
        fail(f"{source} has another model shape than the keys you set: "
             + ', '.join(f"{k}: {a!r} there vs {b!r} set" for k, (a, b) in diff.items())
             + f". Drop --{' --'.join(diff)} (the weights decide the shape), or start a new --out_dir "
                f"with init_from='scratch'")


def check_writable(out_dir: str) -> None:
    """out_dir must be a path (not empty: that is the current folder), creatable and writable (the nearest
    existing folder on its path is checked)."""
    try:
        check_output_path('out_dir', out_dir)
    except ConfigError as e:
        fail(str(e))
    folder = Path(out_dir)
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        fail(f"out_dir={str(folder)!r}: {existing} is a file, not a folder: choose another --out_dir")
    if not os.access(existing, os.W_OK):
        fail(f"out_dir={str(folder)!r}: {existing} is not writable: choose another --out_dir")
