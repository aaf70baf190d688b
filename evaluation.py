"""
Evaluation by loss. Two uses:

1. The estimate train.py logs at every eval (estimate_loss): the mean cross-entropy over a fixed set of batches,
   split over the ranks and all-reduced, with the logit diagnostics of the OEC authors' code
   (losses.logit_diagnostics). The batches are the same at every eval (their own seeded generator or loader: the
   training RNG is untouched).
2. Scoring a finished model on held-out data (score_tokens, evaluate; the CLI below): every token of a dataset's
   validation split, in consecutive windows, as loss and bits per byte, overall and per language:

    python evaluation.py --out_dir=out                                   # the run's own dataset
    python evaluation.py --out_dir=out --datasets=shakespeare,other --logits_dtype=bfloat16
    python evaluation.py --out_dir=out --mu_centering=True               # output embedding mu-centered
    python evaluation.py --hf_dir=hf --tokenizer=hf/spiece.model --datasets=shakespeare

   Definitions. The split's tokens t_0..t_{N-1} (one EOT before each document, data.py) are cut into windows of
   block_size tokens; every token but t_0 is predicted exactly once, from the tokens before it in its window
   (the first token of a window from the previous token only: at most block_size - 1 tokens of context).
   loss = total nats / (N - 1), in nats per token. Bits per byte: bpb = total nats / (ln 2 * B), with B the
   UTF-8 bytes of the split's documents after data.py's GPT-SW3 normalisation, as data.py counted them when it
   prepared the folder (meta.json val_bytes, per language languages.<lang>.val_bytes); the EOT tokens carry
   no bytes, and their nats (where a document ends) count. With two or more languages each val_<lang>.bin is
   scored on its own and the overall figures are the sums over the languages. bpb compares models across
   tokenizers; loss only within one tokenizer.

   A dataset is scored only when it was tokenized with the model's tokenizer (the sha256 identity data.py
   records, data.tokenizer_identity): another one stops before any work. The record (one JSON line per
   dataset) is appended to evals.jsonl in the run (or HF) folder; ckpt.pt, metrics.jsonl and the rest of the
   training state are only read.

   logits_dtype='bfloat16' runs the forward under bf16 autocast, as train.py's dtype='bfloat16' does, so the
   logits are rounded to bf16 (cross-entropy itself in fp32). mu_centering=True scores with the mean row mu of
   the output embedding subtracted (E - mu: OEC's mu-centering, Stollenwerk, Lokrantz, Hertzberg 2026,
   arXiv:2601.02031), the input embedding untouched even when tied: a gauge change, so in fp32 the loss does
   not move, while in bf16 it removes the rounding a large mean logit mu.h causes. fp32 vs bf16 vs centered
   separates evaluation rounding from damage done in training.
"""
import math
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import losses
from chat import ChatLoader
from loader import get_batch
from tokenizer import Tokenizer

Batches = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> x, y (B, T) int64


def fixed_batches(tokens: np.ndarray, batch_size: int, block_size: int, seed: int,
                  device: str | torch.device = "cpu") -> Batches:
    """Random windows of tokens (loader.get_batch), the same ones at every eval and on every rank."""
    gen = torch.Generator().manual_seed(seed)
    return lambda: get_batch(tokens, batch_size, block_size, gen, device)


def chat_batches(conversations: list, tok: Tokenizer, batch_size: int, block_size: int, seed: int,
                 device: str | torch.device = "cpu") -> Batches:
    """Chat batches (chat.ChatLoader, loss on the assistant tokens only) in a fixed order, the same at every eval."""
    return ChatLoader(conversations, tok, batch_size, block_size, seed=seed, device=device).next_batch


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, next_batch: Batches, n_batches: int, *, diagnostics: int = 0,
                  autocast: AbstractContextManager = nullcontext(), rank: int = 0, world_size: int = 1,
                  device: str | torch.device = "cpu",
                  output_embedding: torch.Tensor | None = None) -> tuple[float, dict]:
    """(mean CE in nats/token, logit diagnostics) over n_batches batches (rounded up to a multiple of
    world_size), split over the ranks (every rank draws every batch and keeps its share) and all-reduced.
    The diagnostics average over the first `diagnostics` batches overall, whatever the world size (every rank
    also computes them on its own first batch, weighted 0 past those, so all ranks reduce the same keys); with
    output_embedding (V, H) they add losses.hidden_diagnostics (|h_bar|, mu.h_bar, ...: per batch, then
    averaged), which needs a model whose forward takes return_hidden (model.GPT). The model is put back in
    training mode."""
    model.eval()
    n_batches = math.ceil(n_batches / world_size) * world_size  # every rank runs the same number of forwards
    diagnostics = min(diagnostics, n_batches)
    ce_sum, diag = 0.0, {}
    for k in range(n_batches):
        x, y = next_batch()
        if k % world_size != rank:
            continue
        diag_batch = diagnostics and k < max(diagnostics, world_size)
        hidden = output_embedding is not None and diag_batch
        with autocast:
            logits = model(x, return_hidden=True) if hidden else model(x)
            if hidden:
                logits, h = logits
            ce_sum += losses.cross_entropy(logits, y).item()
        if diag_batch:
            w = 1 / diagnostics if k < diagnostics else 0.0
            found = losses.logit_diagnostics(logits, y)
            if hidden:
                found |= losses.hidden_diagnostics(h, output_embedding, y)
            for key, v in found.items():
                diag[key] = diag.get(key, 0.0) + w * v
    keys = sorted(diag)
    stats = torch.tensor([ce_sum / n_batches] + [diag[k] for k in keys], device=device)
    if world_size > 1:
        dist.all_reduce(stats)  # sum over ranks = mean over all batches
    model.train()
    stats = stats.tolist()
    return stats[0], dict(zip(keys, stats[1:]))


# -----------------------------------------------------------------------------
# scoring a finished model on held-out data (module docstring, use 2)

LOGITS_DTYPES = ('float32', 'bfloat16')
EVALS = 'evals.jsonl'  # evaluate()'s records, one JSON line each, in the run (or HF) folder


def output_logits(model: torch.nn.Module, h: torch.Tensor, mu_centering: bool = False) -> torch.Tensor:
    """Logits (..., V) from final hidden states h (..., C) as GPT.forward computes them (output embedding, then
    soft-capping when the model has it). mu_centering: with E - mu, mu the mean row of the output embedding E
    (V, C) (OEC's mu-centering, arXiv:2601.02031), computed on the side: the model's weights, and a tied input
    embedding, stay as they are."""
    weight = model.output_embedding()  # (V, C)
    if mu_centering:
        weight = weight - weight.mean(dim=0, keepdim=True)  # (V, C) - (1, C)
    logits = F.linear(h, weight)
    if model.config.logit_softcap:
        logits = losses.softcap(logits, model.config.logit_softcap)
    return logits


@torch.no_grad()
def score_tokens(model: torch.nn.Module, tokens: np.ndarray, *, block_size: int = 0, batch_size: int = 8,
                 logits_dtype: str = 'float32', mu_centering: bool = False,
                 device: str | torch.device = 'cpu') -> dict:
    """Score every token of `tokens` (N,) but the first: consecutive windows of block_size tokens (0 = the
    model's context), each token predicted once (module docstring). Returns {'nats': total nats (float),
    'tokens': N - 1 predicted tokens, 'logits_mean_mean': mean over the predicted positions of the mean logit
    (the OEC authors' logits_mean_mean, losses.logit_diagnostics)}. logits_dtype: 'float32' | 'bfloat16' (the
    forward under bf16 autocast). The model is left in eval mode."""
    if logits_dtype not in LOGITS_DTYPES:
        raise ValueError(f"logits_dtype={logits_dtype!r} is not one of {', '.join(LOGITS_DTYPES)}")
    T = block_size or model.config.block_size
    if T > model.config.block_size:
        raise ValueError(f"block_size={T} is longer than the model's context {model.config.block_size}: use "
                         f"--block_size={model.config.block_size} or less (0 = the model's context)")
    device_type = torch.device(device).type
    autocast = torch.autocast(device_type, dtype=torch.bfloat16) if logits_dtype == 'bfloat16' else nullcontext()
    model.eval()
    n = len(tokens) - 1  # predicted tokens
    full = n // T  # whole windows; the rest (n - full * T tokens) is one shorter window
    starts = [range(s, min(s + batch_size, full)) for s in range(0, full, batch_size)]
    spans = [(list(r), T) for r in starts] + ([([full], n - full * T)] if n > full * T else [])
    nats, mean_logit = 0.0, 0.0
    for rows, t in spans:
        ids = torch.from_numpy(np.stack([tokens[i * T:i * T + t + 1].astype(np.int64) for i in rows]))
        ids = ids.to(device)  # (B, t + 1)
        x, y = ids[:, :-1], ids[:, 1:]
        with autocast:
            logits = output_logits(model, model.hidden_states(x), mu_centering)  # (B, t, V), bf16 under autocast
        logits = logits.float()
        nats += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction='sum').item()
        mean_logit += logits.mean(dim=-1).sum().item()
    return dict(nats=nats, tokens=n, logits_mean_mean=mean_logit / max(n, 1))


# `python evaluation.py` keys (-h lists them with these comments)
EVAL_DEFAULTS = dict(
    out_dir='out',  # the run folder whose ckpt.pt is scored; the records are appended to its evals.jsonl
    hf_dir='',  # or: a Hugging Face folder to score (hf.load_hf: GPT-2, Llama, Qwen3...; records to its evals.jsonl)
    tokenizer='',  # hf_dir only: its tokenizer spec ('' = the folder's spiece.model); must be each dataset's
    datasets=[],  # comma-separated dataset names under data_root ([] = the run's own training dataset)
    data_root='data',  # dataset folders live in data_root/<dataset> (prepared by data.py)
    logits_dtype='float32',  # 'float32' | 'bfloat16' (the forward under bf16 autocast, as train.py's dtype)
    mu_centering=False,  # score with the output embedding's mean row subtracted (OEC's mu-centering, a gauge change)
    block_size=0,  # window length in tokens; 0 = the model's context
    batch_size=8,  # windows per forward
    device='cuda' if torch.cuda.is_available() else 'cpu',  # 'cpu' | 'cuda' | 'cuda:1' ...
)


def _dataset_plan(data_root: str, names: list[str], tokenizer_id: str | None, source: str) -> list[dict]:
    """Every dataset's folder, splits (name, language, bytes) and identity, checked before any work: a folder that
    is missing, has no recorded tokenizer, or was tokenized with another tokenizer than the model's stops here."""
    import data
    plans = []
    for name in names:
        folder = Path(data_root) / name
        meta = data.load_meta(folder)
        identity = data.dataset_identity(folder)
        if identity['tokenizer_id'] is None:
            raise ValueError(f"dataset {str(folder)!r} records no tokenizer (nanoGPT layout), so it cannot be "
                             f"checked against the model's: prepare it with data.py")
        if identity['tokenizer_id'] != tokenizer_id:
            raise ValueError(f"dataset {str(folder)!r} was tokenized with another tokenizer ({meta.get('tokenizer')})"
                             f" than {source}: prepare it with the model's tokenizer (data.py prepare "
                             f"--tokenizer=...) or drop it from --datasets")
        langs = meta.get('languages', {})
        splits = [(s, s[4:], langs.get(s[4:], {}).get('val_bytes')) for s in meta.get('val_splits', [])] or \
            [('val', None, meta.get('val_bytes'))]
        for split, _, _ in splits:
            data.load_tokens(folder, split)  # checked now: length and dtype against meta.json
        plans.append(dict(name=name, folder=folder, splits=splits, identity=identity))
    return plans


def evaluate(out_dir: str = 'out', hf_dir: str = '', tokenizer: str = '', datasets: list[str] | None = None,
             data_root: str = 'data', logits_dtype: str = 'float32', mu_centering: bool = False,
             block_size: int = 0, batch_size: int = 8, device: str = 'cpu', write: bool = True) -> list[dict]:
    """Score a run (out_dir) or a Hugging Face folder (hf_dir) on the validation split of each dataset
    (data_root/<name>; default: the run's own) and return one record per dataset: val_loss (nats/token),
    val_bpb, val_tokens, val_bytes, per language val_loss/<lang>, val_bpb/<lang>, val_tokens/<lang>, plus
    logits_mean_mean and what was scored how. write=True appends each record to evals.jsonl of that folder.
    Raises InputError/ValueError/OSError (one line: the key or file and the fix) before any work."""
    import data
    from checkpoint import append_metrics, load_checkpoint, model_from_checkpoint
    from configurator import ConfigError
    from hf import load_hf
    from tokenizer import get_tokenizer
    if logits_dtype not in LOGITS_DTYPES:
        raise ConfigError(f"logits_dtype={logits_dtype!r} is not one of {', '.join(LOGITS_DTYPES)}: fix --logits_dtype")
    for key, value in (('block_size', block_size), ('batch_size', batch_size)):
        if value < (0 if key == 'block_size' else 1):
            raise ConfigError(f"{key}={value} is out of range: fix --{key}")
    if str(device).startswith('cuda') and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available: use --device=cpu")
    if hf_dir:
        folder, step = Path(hf_dir), None
        spec = tokenizer or next((str(p) for p in (folder / 'spiece.model', folder / 'tokenizer.model')
                                  if p.is_file()), '')
        if not spec:
            raise ConfigError(f"{hf_dir} holds no spiece.model: pass --tokenizer=SPEC (the folder's tokenizer: "
                              f"'gpt2', a .model file, ...)")
        tokenizer_id, source = data.tokenizer_identity(get_tokenizer(spec)), f"the tokenizer {spec}"
        names = list(datasets or [])
        if not names:
            raise ConfigError("--hf_dir needs --datasets=NAME[,NAME...] (datasets prepared with its tokenizer)")
    else:
        ckpt = load_checkpoint(out_dir)
        folder, step = Path(out_dir), ckpt.get('step')
        tokenizer_id = (ckpt.get('data_identity') or {}).get('tokenizer_id')
        if tokenizer_id is None:
            raise ValueError(f"the run in {out_dir} records no tokenizer identity (it trained on a nanoGPT-layout "
                             f"folder), so no dataset can be checked against it")
        source = f"the run in {out_dir}"
        names = list(datasets or [ckpt['config']['dataset']])
    plans = _dataset_plan(data_root, names, tokenizer_id, source)
    model = load_hf(hf_dir) if hf_dir else model_from_checkpoint(ckpt)
    model.to(device)
    records = []
    for plan in plans:
        rec = dict(time=time.strftime('%Y-%m-%dT%H:%M:%S'), source=str(folder), step=step, dataset=plan['name'],
                   data_dir=str(plan['folder'].resolve()), dataset_id=plan['identity']['dataset_id'],
                   split='val', logits_dtype=logits_dtype, mu_centering=mu_centering,
                   block_size=block_size or model.config.block_size)
        total = dict(nats=0.0, tokens=0, mean_logit=0.0)
        for split, lang, n_bytes in plan['splits']:
            s = score_tokens(model, data.load_tokens(plan['folder'], split), block_size=block_size,
                             batch_size=batch_size, logits_dtype=logits_dtype, mu_centering=mu_centering,
                             device=device)
            if lang is not None:
                rec[f'val_loss/{lang}'] = s['nats'] / s['tokens']
                rec[f'val_bpb/{lang}'] = s['nats'] / (math.log(2) * n_bytes) if n_bytes else None
                rec[f'val_tokens/{lang}'] = s['tokens']
            total['nats'] += s['nats']
            total['tokens'] += s['tokens']
            total['mean_logit'] += s['logits_mean_mean'] * s['tokens']
        n_bytes = [b for _, _, b in plan['splits']]
        n_bytes = sum(n_bytes) if all(n_bytes) else None  # a folder prepared before data.py counted bytes: none
        rec.update(val_loss=total['nats'] / total['tokens'],
                   val_bpb=total['nats'] / (math.log(2) * n_bytes) if n_bytes else None,
                   val_tokens=total['tokens'], val_bytes=n_bytes,
                   logits_mean_mean=total['mean_logit'] / total['tokens'])
        if write:
            append_metrics(folder, rec, name=EVALS)
        records.append(rec)
    return records


def main(argv: list[str] | None = None) -> None:
    """python evaluation.py [config.py ...] [--key=value ...]: score a run or HF folder on held-out data."""
    from configurator import configure
    cfg = configure(dict(EVAL_DEFAULTS), sys.argv[1:] if argv is None else argv, source=__file__)
    for rec in evaluate(**cfg):
        langs = ''.join(f", {k[9:]} {v:.4f}" for k, v in rec.items() if k.startswith('val_loss/'))
        bpb = f", {rec['val_bpb']:.4f} bits/byte" if rec['val_bpb'] is not None else ''
        print(f"{rec['dataset']}: val loss {rec['val_loss']:.4f} nats/token{bpb} over {rec['val_tokens']:,} tokens"
              f"{langs} ({rec['logits_dtype']}{', mu-centered' if rec['mu_centering'] else ''}) "
              f"-> {Path(rec['source']) / EVALS}")


if __name__ == '__main__':
    from configurator import run_cli  # bad input: one line `evaluation.py: problem: fix`, exit 1
    run_cli('evaluation.py', main)
