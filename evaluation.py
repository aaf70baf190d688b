"""
The loss estimate train.py logs at every eval: the mean cross-entropy over a fixed set of batches, split over the
ranks and all-reduced, with the logit diagnostics of the OEC authors' code (losses.logit_diagnostics). The
batches are the same at every eval (their own seeded generator or loader: the training RNG is untouched).
"""
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.distributed as dist

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
    The diagnostics average over the first `diagnostics` batches of each rank; with output_embedding (V, H) they
    add losses.hidden_diagnostics (|h_bar|, mu.h_bar, ...: per batch, then averaged), which needs a model whose
    forward takes return_hidden (model.GPT). The model is put back in training mode."""
    model.eval()
    n_batches = math.ceil(n_batches / world_size) * world_size  # every rank runs the same number of forwards
    diagnostics = min(diagnostics, n_batches // world_size)
    ce_sum, diag = 0.0, {}
    for k in range(n_batches):
        x, y = next_batch()
        if k % world_size != rank:
            continue
        hidden = output_embedding is not None and k < diagnostics * world_size
        with autocast:
            logits = model(x, return_hidden=True) if hidden else model(x)
            if hidden:
                logits, h = logits
            ce_sum += losses.cross_entropy(logits, y).item()
        if k < diagnostics * world_size:
            found = losses.logit_diagnostics(logits, y)
            if hidden:
                found |= losses.hidden_diagnostics(h, output_embedding, y)
            for key, v in found.items():
                diag[key] = diag.get(key, 0.0) + v / (diagnostics * world_size)
    keys = sorted(diag)
    stats = torch.tensor([ce_sum / n_batches] + [diag[k] for k in keys], device=device)
    if world_size > 1:
        dist.all_reduce(stats)  # sum over ranks = mean over all batches
    model.train()
    stats = stats.tolist()
    return stats[0], dict(zip(keys, stats[1:]))
