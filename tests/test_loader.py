"""Tests of loader.py: the pretraining batch order and its resume state."""
import numpy as np
import pytest
import torch


def test_sequential_loader_bounds_defaults_and_resume_into_a_new_epoch():
    """One window is enough (len = block_size + 1); a length of 2 x block_size still gives one window (its
    target needs one more token); ranks must be in [0, world_size); exactly world_size x batch_size windows
    suffice; the defaults (seed 1337, one rank) read epoch_permutation(n, 1337, epoch); a loader resumed at an
    epoch boundary continues with the next epoch's order; a block_size mismatch is named."""

    from loader import SequentialLoader, epoch_permutation

    x, y = SequentialLoader(np.arange(9), 1, 8).next_batch()
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[0], torch.arange(1, 9))
    one = SequentialLoader(np.arange(16), 1, 8)
    assert all(torch.equal(one.next_batch()[0][0], torch.arange(8)) for _ in range(3))
    with pytest.raises(ValueError, match=r"rank 2 is not in \[0, world_size=2\)"):
        SequentialLoader(np.arange(33), 2, 8, rank=2, world_size=2)
    SequentialLoader(np.arange(33), 2, 8, rank=1, world_size=2).next_batch()  # 4 windows = 2 ranks x 2
    data = np.arange(8 * 8 + 1)  # 8 windows
    loader = SequentialLoader(data, 2, 8)
    starts = [loader.next_batch()[0][:, 0] // 8 for _ in range(8)]  # two epochs of 4 batches
    for epoch in (0, 1):
        assert torch.cat(starts[4 * epoch:4 * epoch + 4]).tolist() == epoch_permutation(8, 1337, epoch).tolist()
    first = SequentialLoader(data, 2, 8, seed=5)
    for _ in range(4):  # a whole epoch
        first.next_batch()
    resumed = SequentialLoader(data, 2, 8, seed=5)
    resumed.load_state_dict(first.state_dict())
    assert torch.equal(resumed.next_batch()[0], first.next_batch()[0])
    with pytest.raises(ValueError, match=r"loader state has block_size=4, this loader 8: resume with the "
                                         r"checkpoint's block_size"):
        SequentialLoader(data, 2, 8).load_state_dict(SequentialLoader(data, 2, 4).state_dict())
