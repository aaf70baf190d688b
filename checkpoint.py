"""
The run folder train.py writes, and the one reader every consumer uses (train.py's resume and fine-tuning,
sample.py, ner.py's GPT backbone):

    from checkpoint import load_run
    run = load_run('out')          # run.model (GPT, eval mode), run.tokenizer, run.config, run.step

and, for train.py, the config of a resumed run (resolve_init: the run's own keys, LAUNCH_KEYS excepted) or a
fine-tuned one (the pretraining run's data), and what a resume changes (resume_changes).

Run folder (out_dir):
    config.json      the resolved config + git_commit, torch_version, world_size, tokens_per_step, model_args
    metrics.jsonl    one JSON object per log step or eval
    ckpt.pt          the newest checkpoint: a hard link to the newest ckpt_<step>.pt
    ckpt_<step>.pt   the last keep_last_k checkpoints, step zero-padded to 7 digits
    summary.json     written when the run ends (finished, diverged or stopped)
    .lock            while a run uses the folder: its pid, host and start time (lock_run_folder)
    evals.jsonl      one JSON object per held-out evaluation of a finished checkpoint (python evaluation.py)

A checkpoint is one portable file, a dict of tensors and plain Python values (every load here uses
torch.load(weights_only=True)): 'model' and 'optimizer' (full state dicts keyed by parameter name, the same
for parallelism none/ddp/fsdp), 'step', 'tokens', 'best_val_loss', 'nonfinite_skipped', 'wall_time_s',
'schedule', 'loader' (the data position), 'rng' (one set of RNG states per rank), 'world_size', 'config',
'model_args' and 'data_identity' (data.dataset_identity() of the data folder it trained on).

Sharded format (train.py --checkpoint_format=dcp, for FSDP2 models too large to gather on one rank): every rank
writes its shards of model and optimizer with torch.distributed.checkpoint (DCP) into ckpt_<step>.dcp/ (a
folder on a filesystem all ranks share), and ckpt_<step>.pt holds everything else, with 'model' and 'optimizer'
None and 'dcp' = that folder's name. The same atomic rename, ckpt.pt link and keep_last_k pruning apply (the
folder is renamed into place before its ckpt_<step>.pt is written, and pruned with it). DCP reshards on load, so
a run resumes on another world size; load_run and sample.py read it in one process, and
    python checkpoint.py convert --out_dir=OUT_DIR [--to=DIR] [--hf=DIR]
writes the single-file checkpoint (a run folder that resumes anywhere) and/or a Hugging Face folder (weights,
config, tokenizer: AutoModelForCausalLM and AutoTokenizer load it).

Errors a user can fix raise CheckpointError with one message naming the file and the fix.
"""
import atexit
import fcntl
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from configurator import InputError, write_error

CKPT = 'ckpt.pt'  # the newest checkpoint of a run folder
_STEP_FILE = re.compile(r'ckpt_(\d{7,})\.pt')  # ckpt_<step>.pt: the only files pruning may remove
_COMPILE_PREFIX = '_orig_mod.'  # torch.compile'd models save their keys with this prefix


class CheckpointError(InputError):
    """A checkpoint that cannot be written or read; the message names the file and the fix."""


# -----------------------------------------------------------------------------
# run-folder layout

def step_file(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / f'ckpt_{step:07d}.pt'


def step_files(run_dir: str | Path) -> dict[int, Path]:
    """{step: path} of the ckpt_<step>.pt files in run_dir (other names, e.g. ckpt_best.pt, are not ours)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    matches = (_STEP_FILE.fullmatch(p.name) for p in run_dir.iterdir())
    return {int(m.group(1)): run_dir / m.group(0) for m in matches if m}


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether run_dir holds a checkpoint (ckpt.pt or any ckpt_<step>.pt)."""
    return (Path(run_dir) / CKPT).is_file() or bool(step_files(run_dir))


def write_json(path: str | Path, obj: dict) -> None:
    """Atomic: a temporary file renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    try:
        tmp.write_text(json.dumps(obj, indent=2) + '\n')
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{write_error(e, path.parent, path.name)} (or use another --out_dir)") from None


def json_safe(rec: dict) -> dict:
    """A record JSON can hold: non-finite floats become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def git_commit() -> str:
    """The commit of the code a run used (config.json records it), 'unknown' outside a git checkout."""
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or 'unknown'
    except OSError:
        return 'unknown'


# -----------------------------------------------------------------------------
# writing

def save_checkpoint(ckpt: dict, run_dir: str | Path, step: int, keep_last_k: int, pause_s: float = 0.0) -> Path:
    """Write ckpt as run_dir/ckpt_<step>.pt and make it run_dir/ckpt.pt, atomically; prune to keep_last_k.

    ckpt_<step>.pt.tmp is written and fsynced, renamed to ckpt_<step>.pt, hard-linked as ckpt.pt (via a
    temporary name + rename), then the directory is fsynced. A kill at any moment leaves the previous ckpt.pt
    complete. A failed write (full or read-only disk) removes its temporary file at once and raises
    CheckpointError; the previous checkpoint stays. pause_s (tests only) sleeps between write and rename.
    Returns the ckpt_<step>.pt path."""
    run_dir = Path(run_dir)
    for stale in run_dir.glob('ckpt*.pt.tmp'):  # left by a write that was killed
        stale.unlink()
    path, tmp, latest_tmp = step_file(run_dir, step), step_file(run_dir, step).with_suffix('.pt.tmp'), \
        run_dir / (CKPT + '.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        time.sleep(pause_s)
        os.replace(tmp, path)
        os.link(path, latest_tmp)
        os.replace(latest_tmp, run_dir / CKPT)
        dir_fd = os.open(run_dir, os.O_RDONLY)
        os.fsync(dir_fd)  # make the renames durable
        os.close(dir_fd)
    except (OSError, RuntimeError) as e:  # torch.save: a RuntimeError when the disk fills as the file closes
        tmp.unlink(missing_ok=True)
        latest_tmp.unlink(missing_ok=True)
        raise CheckpointError(f"{write_error(e, run_dir, f'the step-{step} checkpoint')} (or use another "
                              f"--out_dir); {run_dir / CKPT} still holds the previous checkpoint") from None
    prune(run_dir, step, keep_last_k)
    return path


def prune(run_dir: str | Path, step: int, keep_last_k: int) -> list[Path]:
    """Remove this run's ckpt_<s>.pt with s <= step, all but the newest keep_last_k by step (as numbers).
    Files of later steps (another lineage the user resumed away from) and other names are never touched."""
    ours = sorted((s, p) for s, p in step_files(run_dir).items() if s <= step)
    removed = [p for _, p in ours[:max(0, len(ours) - keep_last_k)]]
    for p in removed:
        p.unlink()
        shutil.rmtree(p.with_suffix('.dcp'), ignore_errors=True)  # its shards (sharded format)
    return removed


def rng_state() -> dict:
    """torch, numpy, python and CUDA RNG states as tensors and plain values (weights_only-loadable)."""
    np_state = np.random.get_state()  # ('MT19937', keys uint32 (624,), pos, has_gauss, cached_gaussian)
    return {'torch': torch.get_rng_state(),
            'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            'python': random.getstate(),
            'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s['torch'])
    np.random.set_state((s['numpy'][0], s['numpy'][1].numpy().astype(np.uint32), *s['numpy'][2:]))
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in s['python']))
    if s['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s['cuda'])


def gather_state(model: torch.nn.Module, opt: torch.optim.Optimizer, checkpoint_format: str, distributed: bool,
                 world_size: int, rank: int) -> tuple[dict | None, dict | None, list, list[str]]:
    """What a checkpoint holds of a (DDP/FSDP2) model besides the counters: (model state dict, optimizer state dict,
    every rank's rng_state(), the names of non-finite weights: a checkpoint of them must not be written).
    Format 'full': under DDP/FSDP2 (any world size, 1 too) the full state dicts are gathered to rank 0's CPU (a
    collective every rank joins) as plain tensors keyed by parameter name, so tied weights and another world
    size load back (Modalities, issues #348/#381); other ranks get None. Format 'dcp': no gather, both None
    (save_sharded writes the shards); the finite check runs on every rank's shards."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )
    if checkpoint_format == 'dcp':
        model_sd = optim_sd = None
        local = [p.to_local() if hasattr(p, 'to_local') else p for p in model.parameters()]
        finite = torch.stack([torch.isfinite(p).all() for p in local]).all().float().reshape(1)
        if world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        bad = [] if finite.item() else ['(a shard of) some parameter']
    else:
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True) if distributed else StateDictOptions()
        model_sd = get_model_state_dict(model, options=opts)
        optim_sd = get_optimizer_state_dict(model, opt, options=opts)
        bad = [k for k, v in model_sd.items() if not torch.isfinite(v).all()] if rank == 0 else []
        model_sd = {k: v.cpu() for k, v in model_sd.items()} if rank == 0 else None
    rng = [None] * world_size
    if world_size > 1:
        dist.all_gather_object(rng, rng_state())
    else:
        rng = [rng_state()]
    return model_sd, optim_sd if rank == 0 else None, rng, bad


def start_run_folder(run_dir: str | Path, config: dict, resume_step: int | None) -> None:
    """Create run_dir and write its config.json (the resolved config and what the run records beside it). A new
    run (resume_step None) removes an old run's checkpoints, summary.json and metrics.jsonl first; a resumed one
    keeps the metrics.jsonl records up to resume_step (later ones will be written again). Rank 0 only."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = run_dir / 'metrics.jsonl'
    if resume_step is None:
        for old in [run_dir / CKPT, *step_files(run_dir).values(), run_dir / 'summary.json', metrics]:
            old.unlink(missing_ok=True)
    write_json(run_dir / 'config.json', config)
    if resume_step is not None and metrics.exists():
        keep = [ln for ln in metrics.read_text().splitlines() if ln and json.loads(ln)['step'] <= resume_step]
        metrics.write_text(''.join(ln + '\n' for ln in keep))


LOCK = '.lock'  # a run folder's lock file while train.py uses it: the holder's pid, host and start time
_held: dict[Path, tuple[int, Path, list[Path]]] = {}  # this process's locks: folder -> (fd, lock file, folders made)


def _holder(fd: int) -> str:
    """'pid N on HOST, started TIME' from a lock file's content ('' when it holds none)."""
    try:
        rec = json.loads(os.pread(fd, 4096, 0) or b'null')
        return f"pid {rec['pid']} on {rec['host']}, started {rec['started']}"
    except (ValueError, TypeError, KeyError):
        return ''


def lock_run_folder(run_dir: str | Path, program: str = 'train.py') -> None:
    """Hold run_dir (created if missing) for the rest of this process, so that a second run on it stops at once
    instead of interleaving its writes with this one's. The lock is flock(2) on run_dir/.lock, whose content names
    the holder (pid, host, start time). The kernel drops it whenever the process ends (kill -9 too), so a lock file
    whose lock is free is stale: it is taken over with a one-line message naming the old holder. A folder this
    process holds already (an earlier in-process run) is held on. Released at exit and by release_run_folders.
    Raises CheckpointError naming the holder and the fix."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in _held:
        return
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]  # deepest first
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or 'another process'
            os.close(fd)
            raise CheckpointError(f"out_dir {run_dir} is in use by another run: {holder} (lock {path}): wait for "
                                  f"it to end, or choose another --out_dir") from None
        try:  # the holder may have removed the file between our open and flock: then lock the new one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    old = _holder(fd)
    if old:
        print(f"{program}: out_dir {run_dir}: taking over the stale lock of {old}, which is no longer running",
              file=sys.stderr)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                  started=time.strftime('%Y-%m-%d %H:%M:%S %z'))).encode(), 0)
    _held[run_dir.resolve()] = (fd, path, made)


def release_run_folders() -> None:
    """Release this process's run-folder locks: the lock file is removed (while still held), then the folders
    lock_run_folder created, if nothing else was written into them (a run that stopped at a check)."""
    while _held:
        _, (fd, path, made) = _held.popitem()
        path.unlink(missing_ok=True)
        os.close(fd)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break


atexit.register(release_run_folders)  # any exit but a kill: the kernel drops a killed process's flock itself


def append_metrics(run_dir: str | Path, rec: dict, name: str = 'metrics.jsonl') -> None:
    """Append one record (a log step or an eval) to run_dir/metrics.jsonl (or to run_dir/<name>: evaluation.py's
    evals.jsonl); non-finite floats become null."""
    path = Path(run_dir) / name
    try:
        with open(path, 'a') as f:
            f.write(json.dumps(json_safe(rec)) + '\n')
    except OSError as e:
        raise CheckpointError(f"cannot append to {path}: {e.strerror or e}: free disk space or use a writable "
                              f"--out_dir (resume from {Path(run_dir) / CKPT} afterwards)") from None


def write_summary(run_dir: str | Path, finished: bool, diverged: bool, last_eval: dict, last_loss: float | None,
                  wall_time_s: float, step: int, tokens: int, best_val_loss: float, nonfinite_skipped: int) -> None:
    """run_dir/summary.json: how the run ended (finished, diverged, else stopped), the last eval's values and the
    progress counters. Raises CheckpointError when it cannot be written."""
    final = {k: v for k, v in last_eval.items() if k not in ('step', 'tokens', 'train_loss', 'val_loss')}
    summary = dict(finished=finished, diverged=diverged, final_train_loss=last_eval.get('train_loss'),
                   final_val_loss=last_eval.get('val_loss'), best_val_loss=best_val_loss, tokens=tokens,
                   wall_time_s=wall_time_s, step=step, nonfinite_skipped=nonfinite_skipped,
                   last_train_loss=last_loss, **final)
    write_json(Path(run_dir) / 'summary.json', json_safe(summary))


# -----------------------------------------------------------------------------
# reading

def _read(path: Path, map_location) -> dict:
    """torch.load(weights_only=True); any failure as CheckpointError (never torch's advice to unpickle)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: pass --out_dir=<a run folder written by train.py>") from None
    except Exception as e:  # truncated zip, bad pickle, objects other than tensors and plain values
        raise CheckpointError(f"{path} is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(ckpt, dict) or not {'model', 'model_args'} <= set(ckpt):
        raise CheckpointError(f"{path} is no train.py checkpoint (it lacks 'model' and 'model_args')")
    return ckpt


def newest_intact(run_dir: str | Path, exclude: Path | None = None) -> tuple[int, Path] | None:
    """(step, path) of the newest ckpt_<step>.pt that loads, or None. Reads files newest first."""
    for s, p in sorted(step_files(run_dir).items(), reverse=True):
        if exclude is not None and p.exists() and exclude.exists() and os.path.samefile(p, exclude):
            continue  # a hard link of the broken file is broken too
        try:
            _read(p, 'cpu')
            return s, p
        except CheckpointError:
            continue
    return None


def missing_latest(run_dir: str | Path) -> str:
    """For a message about a missing ckpt.pt: the newest intact ckpt_<step>.pt beside it and how to use it."""
    good = newest_intact(run_dir)
    return (f"; but {good[1]} (step {good[0]}) is intact, so ckpt.pt (a hard link to the newest step file) "
            f"was removed: `ln {good[1]} {Path(run_dir) / CKPT}` and run again" if good else "")


def load_checkpoint(path: str | Path, map_location='cpu') -> dict:
    """The checkpoint dict of a run folder (its ckpt.pt) or of a checkpoint file.

    Raises CheckpointError: not found; or truncated/corrupt, naming the newest intact ckpt_<step>.pt of the
    same folder and the command that makes it the one to resume from."""
    path = Path(path)
    if path.is_dir():
        path = path / CKPT
    try:
        ckpt = _read(path, map_location)
        if ckpt.get('dcp'):  # sharded: the shards' folder beside it
            ckpt['dcp_path'] = str(path.parent / ckpt['dcp'])
            if not (Path(ckpt['dcp_path']) / '.metadata').is_file():
                raise CheckpointError(f"{path} is a sharded checkpoint but its shards {ckpt['dcp_path']} are "
                                      f"missing or incomplete")
        return ckpt
    except CheckpointError as e:
        if not path.exists():
            raise CheckpointError(f"{e}{missing_latest(path.parent)}") from None
        good = newest_intact(path.parent, exclude=path)
        fix = (f"the newest intact checkpoint is {good[1]} (step {good[0]}): `cp {good[1]} {path}` and run "
               f"again" if good else "no intact ckpt_<step>.pt is left in that folder: start a new run")
        raise CheckpointError(f"{e}: {fix}") from None


def model_from_checkpoint(ckpt: dict):
    """A GPT with the checkpoint's weights (model_args + state dict; torch.compile's key prefix removed; a
    sharded checkpoint's shards read in this one process)."""
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(**ckpt['model_args']))
    if ckpt.get('dcp'):
        load_sharded(model, None, ckpt)
        return model
    model.load_state_dict({k.removeprefix(_COMPILE_PREFIX): v for k, v in ckpt['model'].items()})
    return model


# -----------------------------------------------------------------------------
# the config of a resumed or fine-tuned train.py run

# keys that describe this launch, not the run: a resumed run takes every other key from its checkpoint, the
# precision (dtype, tf32) included: a bf16 run resumed on another machine stays bf16 unless --dtype says otherwise
LAUNCH_KEYS = ('out_dir', 'init_from', 'overwrite', 'eval_only', 'sample_tokens', 'wandb_log', 'device',
               'compile', 'parallelism', 'activation_checkpointing', 'init_device',
               'inject_nonfinite_at_step', 'debug_ckpt_sleep', 'fsdp_shard_size', 'fsdp_reduce_every_micro_step',
               'dist_timeout_s')


def resume_changes(cfg: dict, run_cfg: dict, set_keys: frozenset) -> list[str]:
    """One line per key whose value on this resume differs from the run's (its checkpoint's config), e.g.
    'dtype: bfloat16 -> float32 (set on the command line)', so that nothing changes silently. out_dir and
    init_from are the resume itself and are left out."""
    return [f"{k}: {run_cfg[k]} -> {cfg[k]} (" + ("set on the command line" if k in set_keys else
                                                   "a launch key: this launch's default, not the run's") + ")"
            for k in cfg if k in run_cfg and cfg[k] != run_cfg[k] and k not in ('out_dir', 'init_from')]


def resolve_init(cfg: dict, set_keys: frozenset) -> dict | None:
    """The checkpoint whose weights a train.py run loads (None for init_from scratch or hf:/gpt2-hf:), with cfg
    updated in place: a resume takes every key of the run's own config that is not set now and not a LAUNCH_KEY
    (the caller validates the result again); a finetune trains on the pretraining run's dataset and data_root (its
    tokenizer). Raises CheckpointError for a bad checkpoint, or a dataset set to another folder than the
    pretraining run's."""
    if cfg['init_from'] == 'resume':
        ckpt = load_checkpoint(Path(cfg['out_dir']) / CKPT)
        cfg.update({k: v for k, v in ckpt['config'].items()
                    if k in cfg and k not in set_keys and k not in LAUNCH_KEYS})
        return ckpt
    if cfg['init_from'] == 'finetune':
        ckpt = load_checkpoint(Path(cfg['finetune_from']) / CKPT)
        ckpt = {k: ckpt.get(k) for k in ('model', 'model_args', 'config', 'data_identity', 'dcp', 'dcp_path')}
        for key in ('dataset', 'data_root'):  # the tokenizer and validation data of the pretraining run
            if key in set_keys and cfg[key] != ckpt['config'][key]:
                raise CheckpointError(f"init_from='finetune' uses the pretraining run's {key} "
                                      f"({ckpt['config'][key]!r}), not {cfg[key]!r}: drop --{key}")
            cfg[key] = ckpt['config'][key]
        return ckpt
    return None


class Run(NamedTuple):
    model: torch.nn.Module  # the GPT, eval mode, on the device asked for
    tokenizer: object  # tokenizer.Tokenizer
    config: dict  # the run's resolved train config (the checkpoint's)
    step: int  # optimizer steps done
    checkpoint: dict  # the whole checkpoint dict (model and optimizer state included)


def find_tokenizer(config: dict, run_dir: str | Path, spec: str = '', expected_id: str | None = None):
    """The run's tokenizer: `spec` if given, else the config's tokenizer_spec, else the tokenizer of the run's
    dataset folder (data_root/dataset, relative to the working directory or beside the run folder).

    With expected_id (the checkpoint's data_identity['tokenizer_id']) the tokenizer found must have it:
    a different one raises CheckpointError (ids would decode to other text). A recorded spec that no
    longer exists (a moved dataset folder) falls back to the dataset folder."""
    import data
    from tokenizer import get_tokenizer
    candidates = []  # (where it came from, a spec or a dataset folder)
    recorded = config.get('tokenizer_spec') or config.get('tokenizer')  # the spec used, or the one asked for
    if spec:
        candidates.append(('--tokenizer', spec))
    elif recorded and (Path(recorded).is_file() or not recorded.endswith(('.model', '.tiktoken', '.gz'))):
        candidates.append(('the run config', recorded))
    nanogpt = None  # a nanoGPT dataset folder (train.bin, no meta.json) the run trained on
    if not spec and 'dataset' in config:
        rel = Path(config.get('data_root', 'data')) / config['dataset']
        for d in (rel, Path(run_dir).resolve().parent / rel):
            if (d / 'meta.json').is_file() and data.load_meta(d).get('tokenizer'):
                candidates.append((str(d), d))
            elif (d / 'train.bin').is_file() and not (d / 'meta.json').is_file():
                nanogpt = nanogpt or d
    if not candidates and nanogpt is not None and (nanogpt / 'meta.pkl').is_file():
        from tokenizer import CharTokenizer
        try:  # nanoGPT's character-level data (shakespeare_char): its meta.pkl maps characters to ids
            return CharTokenizer(nanogpt / 'meta.pkl')
        except ValueError as e:
            raise CheckpointError(f"the run in {run_dir} trained on the nanoGPT folder {nanogpt}: {e}") from None
    if not candidates:
        where = (f"its dataset folder {nanogpt} is in nanoGPT's layout, which records no tokenizer (nanoGPT's "
                 f"openwebtext and shakespeare use gpt2)" if nanogpt else "its dataset folder is not found")
        raise CheckpointError(f"cannot tell which tokenizer the run in {run_dir} used (its config names none and "
                              f"{where}): pass --tokenizer=SPEC (a .model file, 'gpt2', 'cl100k_base', ...)")
    found = []
    for where, src in candidates:  # the first one that is the run's own tokenizer
        tok = data.dataset_tokenizer(src) if isinstance(src, Path) else get_tokenizer(src)
        if not expected_id or data.tokenizer_identity(tok) == expected_id:
            return tok
        found.append(f"{tok.name} (from {where})")
    raise CheckpointError(f"the run in {run_dir} trained with another tokenizer than {', '.join(found)}: "
                          + ("drop --tokenizer" if spec else "pass --tokenizer=<the run's tokenizer file>"))


def load_run(out_dir: str | Path, device: str = 'cpu', tokenizer: str = '') -> Run:
    """Everything a consumer needs from a train.py run folder: Run(model, tokenizer, config, step, checkpoint).

    out_dir: the run folder (its ckpt.pt is read with weights_only=True). tokenizer: a spec that overrides
    the run's own (it must be the same tokenizer: see find_tokenizer). Raises CheckpointError (missing or
    corrupt checkpoint, naming the newest intact one; unknown or mismatching tokenizer)."""
    ckpt = load_checkpoint(out_dir, map_location=device)
    model = model_from_checkpoint(ckpt).to(device).eval()
    config = ckpt.get('config', {})
    tok = find_tokenizer(config, out_dir, tokenizer, (ckpt.get('data_identity') or {}).get('tokenizer_id'))
    return Run(model, tok, config, ckpt.get('step', 0), ckpt)


# -----------------------------------------------------------------------------
# sharded checkpoints: torch.distributed.checkpoint (DCP)

def dcp_dir(run_dir: str | Path, step: int) -> Path:
    return step_file(run_dir, step).with_suffix('.dcp')


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_sharded(model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict | None, run_dir: str | Path,
                 step: int, keep_last_k: int, pause_s: float = 0.0) -> Path | None:
    """Every rank: write this rank's shards of model and optimizer (their sharded state dicts) with DCP into
    ckpt_<step>.dcp.tmp/, then rank 0 (meta given: the checkpoint dict without tensors) renames it to
    ckpt_<step>.dcp/ and writes ckpt_<step>.pt through save_checkpoint (atomic, ckpt.pt link, pruning of
    older steps with their folders). A kill leaves the previous ckpt.pt and its folder complete.
    Returns the ckpt_<step>.pt path on rank 0, None elsewhere. Raises CheckpointError on a failed write."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    run_dir = Path(run_dir)
    final = dcp_dir(run_dir, step)
    tmp = final.with_name(final.name + '.tmp')
    if meta is not None:
        for stale in run_dir.glob('ckpt_*.dcp.tmp'):  # left by a write that was killed
            shutil.rmtree(stale, ignore_errors=True)
    _barrier()  # nobody writes into tmp before it is cleared
    model_sd, optim_sd = get_state_dict(model, opt)
    try:
        dcp.save({'model': model_sd, 'optim': optim_sd}, checkpoint_id=tmp)  # a collective: all ranks done after
    except Exception as e:  # OSError inside DCP's writer threads arrives wrapped (CheckpointException)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write the step-{step} shards to {tmp}: {str(e).splitlines()[0][:200]}: "
                              f"free disk space or use a writable --out_dir (shared by every node); "
                              f"{run_dir / CKPT} still holds the previous checkpoint") from None
    path = None
    if meta is not None:
        shutil.rmtree(final, ignore_errors=True)  # the same step of a lineage resumed away from
        os.replace(tmp, final)
        path = save_checkpoint(dict(meta, model=None, optimizer=None, dcp=final.name), run_dir, step,
                               keep_last_k, pause_s)
        for orphan in run_dir.glob('ckpt_*.dcp'):  # shards whose ckpt_<step>.pt was pruned or never written
            if orphan != final and not orphan.with_suffix('.pt').exists() and _STEP_FILE.fullmatch(
                    orphan.with_suffix('.pt').name) and int(orphan.stem[5:]) <= step:
                shutil.rmtree(orphan, ignore_errors=True)
    _barrier()
    return path


def load_sharded(model: torch.nn.Module, opt: torch.optim.Optimizer | None, ckpt: dict) -> None:
    """Every rank (or one process): load a sharded checkpoint's model (and optimizer, if given) state into
    model/opt as they are sharded now. DCP reads the slices each rank needs, so the world size may differ
    from the one that wrote it. Raises CheckpointError when the shards do not fit this model/optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )
    state = {'model': get_model_state_dict(model)}
    if opt is not None:
        state['optim'] = get_optimizer_state_dict(model, opt)  # allocates the optimizer state to load into
    try:
        dcp.load(state, checkpoint_id=ckpt['dcp_path'])
    except Exception as e:  # missing keys or shapes: another model or optimizer than the one that wrote it
        raise CheckpointError(f"{ckpt['dcp_path']} does not fit this model/optimizer "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160]}): resume with the run's "
                              f"own model and optimizer settings") from None
    set_model_state_dict(model, state['model'])
    if opt is not None:
        set_optimizer_state_dict(model, opt, state['optim'])


def convert(out_dir: str | Path, to: str | Path | None = None, hf: str | Path | None = None,
            tokenizer: str = '') -> list[Path]:
    """A run folder's newest checkpoint (sharded or not) as (to) a run folder with the single-file checkpoint
    (model and optimizer full state dicts: it resumes in one process or on any world size, and every reader
    loads it) plus config.json, metrics.jsonl and summary.json; and/or (hf) a complete Hugging Face folder
    (hf.save_hf: the architecture with the same function, the run's tokenizer with the same ids, bos/eos/pad
    ids; tokenizer: a spec for a run whose tokenizer is not found, checked to be the run's). One process.
    Every check (the checkpoint, folders that hold a checkpoint or model already, an architecture or tokenizer
    Hugging Face cannot hold exactly) runs before anything is written. Returns the paths written."""
    import optim
    from hf import hf_tokenizer, save_hf
    from model import GPTConfig
    out_dir = Path(out_dir)
    if to is None and hf is None:
        raise CheckpointError("nothing to do: pass --to=DIR (a single-file run folder) and/or --hf=DIR "
                              "(a Hugging Face folder)")
    ckpt = load_checkpoint(out_dir)
    if to is not None and has_checkpoint(to):
        raise CheckpointError(f"{to} already holds a checkpoint: pass another --to folder")
    if hf is not None:
        if any((Path(hf) / name).exists() for name in ('config.json', 'model.safetensors', 'pytorch_model.bin')):
            raise CheckpointError(f"{hf} already holds a Hugging Face model: pass another --hf folder")
        from hf import export_layout
        cfg = GPTConfig(**ckpt['model_args'])
        tok = find_tokenizer(ckpt.get('config', {}), out_dir, tokenizer,
                             (ckpt.get('data_identity') or {}).get('tokenizer_id'))
        try:
            export_layout(cfg)
            hf_tok = hf_tokenizer(tok, cfg.block_size)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
    written = []
    model = model_from_checkpoint(ckpt) if not ckpt.get('dcp') else None
    if to is not None:
        to = Path(to)
        if ckpt.get('dcp'):
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            from model import GPT
            model = GPT(GPTConfig(**ckpt['model_args']))
            opt = optim.run_optimizer(model, ckpt['config'])  # the run's groups, as train.py built them
            load_sharded(model, opt, ckpt)
            ckpt = dict(ckpt, model=model.state_dict(), optimizer=get_optimizer_state_dict(model, opt))
            for key in ('dcp', 'dcp_path'):
                ckpt.pop(key)
        to.mkdir(parents=True, exist_ok=True)
        for name in ('config.json', 'metrics.jsonl', 'summary.json'):
            if (out_dir / name).is_file():
                shutil.copy(out_dir / name, to / name)
        written.append(save_checkpoint(ckpt, to, ckpt['step'], keep_last_k=1))
    if hf is not None:
        save_hf(model if model is not None else model_from_checkpoint(ckpt), hf, tok, hf_tok)
        written.append(Path(hf))
    return written


# `python checkpoint.py convert` keys
CONVERT_DEFAULTS = dict(
    out_dir='out',  # the run folder whose newest checkpoint (ckpt.pt, sharded or not) is converted
    to='',  # write a run folder with the single-file checkpoint here ('' = none)
    hf='',  # write a Hugging Face folder here: weights, config, tokenizer ('' = none; docs/model.md: layouts)
    tokenizer='',  # --hf: the run's tokenizer, where the run folder does not name one that exists ('' = its own)
)


def main(argv: list[str] | None = None) -> None:
    """python checkpoint.py convert [config.py] --out_dir=RUN [--to=DIR] [--hf=DIR [--tokenizer=SPEC]]"""
    from configurator import configure_command
    argv = sys.argv[1:] if argv is None else argv
    for a in argv[1:]:
        if not a.startswith('--') and Path(a).is_dir():  # the old `convert OUT_DIR` form
            raise CheckpointError(f"{a!r} is a folder, and positional arguments are config files: write "
                                  f"--out_dir={a}")
    _, cfg = configure_command({'convert': CONVERT_DEFAULTS}, argv, __file__)
    for p in convert(cfg['out_dir'], cfg['to'] or None, cfg['hf'] or None, cfg['tokenizer']):
        print(f"wrote {p}")


if __name__ == '__main__':
    from configurator import run_cli  # bad input: one line `checkpoint.py: problem: fix`, exit 1
    run_cli('checkpoint.py', main)
