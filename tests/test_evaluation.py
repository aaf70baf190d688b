"""evaluation.py: the eval loss train.py logs, split over ranks: 2 gloo ranks give the same loss and logit
diagnostics as 1 process, and the loss is the mean cross-entropy over the batches (F.cross_entropy by hand)."""
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import evaluation
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64, bias=True)
TOKENS = np.random.default_rng(0).integers(0, 64, 4000).astype(np.uint16)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**CFG))


def _estimate(n_batches: int, rank: int = 0, world_size: int = 1, diagnostics: int = 2) -> tuple[float, dict]:
    batches = evaluation.fixed_batches(TOKENS, batch_size=3, block_size=8, seed=7)
    return evaluation.estimate_loss(_model(), batches, n_batches, diagnostics=diagnostics, rank=rank,
                                    world_size=world_size)


def _rank(rank: int, world_size: int, init_file: str, n_batches: int, out: str) -> None:
    sys.path.insert(0, str(ROOT))
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world_size)
    try:
        for n_diag in (1, 2):  # 1: rank 1 has no diagnostic batch of its own, yet reduces the same keys
            loss, diag = _estimate(n_batches, rank, world_size, n_diag)
            torch.save({'loss': loss, 'diag': diag}, f'{out}.{rank}.{n_diag}')
    finally:
        dist.destroy_process_group()


def test_eval_loss_of_two_ranks_equals_one_process(tmp_path):
    """n_batches=3 is rounded up to 4 on 2 ranks (every rank runs the same number of forwards): the 2-rank
    loss and logit diagnostics (over the first 2 batches overall) equal 1 process on 4 batches, on every rank."""
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    mp.spawn(_rank, args=(2, str(tmp_path / 'init'), 3, str(tmp_path / 'out')), nprocs=2, join=True)
    for n_diag in (1, 2):
        loss1, diag1 = _estimate(4, diagnostics=n_diag)
        for rank in (0, 1):
            got = torch.load(tmp_path / f'out.{rank}.{n_diag}', weights_only=True)
            assert abs(got['loss'] - loss1) <= 1e-6 * loss1, (rank, got['loss'], loss1)
            assert got['diag'].keys() == diag1.keys() and diag1
            for k, v in diag1.items():
                assert abs(got['diag'][k] - v) <= 1e-5 * max(1.0, abs(v)), (n_diag, rank, k, got['diag'][k], v)
    assert abs(_estimate(3)[0] - loss1) > 1e-6  # 3 batches in one process is another estimate: the test can tell


def test_eval_loss_is_the_mean_cross_entropy_of_the_batches():
    batches = evaluation.fixed_batches(TOKENS, batch_size=3, block_size=8, seed=7)
    model = _model().eval()
    with torch.no_grad():
        ref = np.mean([F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
                       for x, y in (batches() for _ in range(5))])
    loss, _ = _estimate(5)
    assert abs(loss - ref) <= 1e-6 * ref


def test_fixed_batches_are_the_same_at_every_eval_and_leave_the_training_rng_alone():
    """Their own seeded generator (loader.get_batch with torch.Generator().manual_seed(seed)): the same windows
    whatever the global RNG did in between, and drawing them does not move the global (training) RNG."""
    ref_gen = torch.Generator().manual_seed(7)
    from loader import get_batch
    want = [get_batch(TOKENS, 3, 8, ref_gen) for _ in range(3)]
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        batches = evaluation.fixed_batches(TOKENS, batch_size=3, block_size=8, seed=7)
        state = torch.get_rng_state()
        got = [batches() for _ in range(3)]
        assert torch.equal(torch.get_rng_state(), state)
        for (x, y), (wx, wy) in zip(got, want):
            assert torch.equal(x, wx) and torch.equal(y, wy)


def test_estimate_loss_computes_no_diagnostics_unless_asked():
    """diagnostics=0 by default: the logit diagnostics (an extra pass over the logits) only when asked."""
    batches = evaluation.fixed_batches(TOKENS, batch_size=3, block_size=8, seed=7)
    loss, diag = evaluation.estimate_loss(_model(), batches, 2)
    assert diag == {} and loss > 0


def test_chat_batches_are_the_chat_loaders_seeded_order():
    """chat_batches = ChatLoader(..., seed=seed).next_batch: the same padded batches as the loader with that
    seed, and another seed gives another order (the seed reaches the loader)."""
    from chat import ChatLoader
    from tokenizer import get_tokenizer
    tok = get_tokenizer("gpt2")
    convs = [[{"role": "user", "content": f"Fråga {i}" + " ord" * i}, {"role": "assistant", "content": f"Svar {i}"}]
             for i in range(8)]
    batches = evaluation.chat_batches(convs, tok, batch_size=2, block_size=64, seed=5)
    ref = ChatLoader(convs, tok, batch_size=2, block_size=64, seed=5)
    other = evaluation.chat_batches(convs, tok, batch_size=2, block_size=64, seed=6)
    differs = False
    for _ in range(4):
        (x, y), (rx, ry), (ox, _) = batches(), ref.next_batch(), other()
        assert torch.equal(x, rx) and torch.equal(y, ry) and x.device.type == "cpu"
        differs |= x.shape != ox.shape or not torch.equal(x, ox)
    assert differs


def test_eval_diagnostics_are_the_mean_logit_diagnostics_of_the_first_batches():
    """diagnostics=k: each key is the mean of losses.logit_diagnostics(logits, targets) over the first k
    batches (by hand), over the trained positions only (targets IGNORE_INDEX left out, as in chat batches); the
    batches after them do not enter."""
    import losses

    def masked_batches():
        batches = evaluation.fixed_batches(TOKENS, batch_size=3, block_size=8, seed=7)

        def next_batch():
            x, y = batches()
            y[:, :5] = losses.IGNORE_INDEX  # a prompt: 5 of 8 positions untrained
            return x, y
        return next_batch
    batches = masked_batches()
    model = _model().eval()
    with torch.no_grad():
        per_batch = [losses.logit_diagnostics(model(x), y) for x, y in (batches() for _ in range(4))]
    for k in (1, 2, 3):
        _, diag = evaluation.estimate_loss(_model(), masked_batches(), 4, diagnostics=k)
        assert diag.keys() == per_batch[0].keys() and diag
        for key in diag:
            ref = sum(d[key] for d in per_batch[:k]) / k
            assert abs(diag[key] - ref) <= 1e-5 * max(1.0, abs(ref)), (k, key, diag[key], ref)
