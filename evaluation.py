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
                  device: str | torch.device = "cpu") -> tuple[float, dict]:
    """(mean CE in nats/token, logit diagnostics) over n_batches batches (rounded up to a multiple of
    world_size), split over the ranks (every rank draws every batch and keeps its share) and all-reduced.
    The diagnostics average over the first `diagnostics` batches overall, whatever the world size (every rank
    also computes them on its own first batch, weighted 0 past those, so all ranks reduce the same keys).
    The model is put back in training mode."""
    model.eval()
    n_batches = math.ceil(n_batches / world_size) * world_size  # every rank runs the same number of forwards
    diagnostics = min(diagnostics, n_batches)
    ce_sum, diag = 0.0, {}
    for k in range(n_batches):
        x, y = next_batch()
        if k % world_size != rank:
            continue
        with autocast:
            logits = model(x)
            ce_sum += losses.cross_entropy(logits, y).item()
        if diagnostics and k < max(diagnostics, world_size):
            w = 1 / diagnostics if k < diagnostics else 0.0
            for key, v in losses.logit_diagnostics(logits, y).items():
                diag[key] = diag.get(key, 0.0) + w * v
    keys = sorted(diag)
    stats = torch.tensor([ce_sum / n_batches] + [diag[k] for k in keys], device=device)
    if world_size > 1:
        dist.all_reduce(stats)  # sum over ranks = mean over all batches
    model.train()
    stats = stats.tolist()
    return stats[0], dict(zip(keys, stats[1:]))
