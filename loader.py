"""
The batches train.py reads from a prepared token file (data.load_tokens): nanoGPT's random windows
(get_batch, for evaluation) and every window once per epoch in a seeded order, sharded over ranks and
resumable exactly (SequentialLoader). Stream is the order-and-sharding rule, shared with chat.ChatLoader.
"""
import numpy as np
import torch


def _too_short(n_tokens: int, block_size: int) -> str:
    return (f"block_size={block_size} is larger than the data: the split has {n_tokens} tokens and a sample "
            f"needs block_size + 1 = {block_size + 1}; use --block_size={max(1, n_tokens - 1)} or less, "
            f"or a larger dataset (a bigger val_fraction for a small val split)")


def to_device(x: torch.Tensor, y: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.device(device).type == "cuda":  # pinned + async copy, as nanoGPT
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def _windows(data: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.from_numpy(data[starts[:, None] + np.arange(block_size + 1)].astype(np.int64))  # (B, T+1)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()  # contiguous: pin_memory() of a view pins a copy


def get_batch(data: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator | None = None,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's loader: batch_size windows at random offsets (with replacement) -> x, y (B, T) int64."""
    if len(data) <= block_size:
        raise ValueError(_too_short(len(data), block_size))
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator).numpy()
    return to_device(*_windows(data, ix, block_size), device)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n windows (or conversations) in an epoch."""
    return np.random.default_rng(seed + epoch).permutation(n)


class Stream:
    """The sharding rule shared by SequentialLoader and ChatLoader. Epoch e shuffles the n items with
    numpy default_rng(seed + e) and cuts the permutation into n // batch_size slices of batch_size items
    (the last n % batch_size items of each epoch are skipped). All epochs' slices form one stream
    s_0, s_1, ...; micro-step m of rank r reads slice s_(m * world_size + r). So the slices read by all
    ranks in one optimizer step are the same for any world size with the same micro batch and global
    batch, and the position is one number, `slices` = m * world_size, valid for any world size."""

    def __init__(self, n: int, batch_size: int, rank: int, world_size: int, seed: int, what: str):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if n < batch_size * world_size:
            raise ValueError(f"{what}: {n} items but world_size x batch_size = {world_size} x {batch_size} = "
                             f"{world_size * batch_size} are needed per step, so some ranks would get "
                             f"nothing; use a smaller batch_size or block_size, fewer ranks, or more data")
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.n_slices = n // batch_size
        self.step = 0  # micro-batches this rank has read
        self._perm_epoch, self._perm = -1, None  # the permutation of the epoch being read

    def next_indices(self) -> np.ndarray:
        epoch, j = divmod(self.step * self.world_size + self.rank, self.n_slices)
        self.step += 1
        if epoch != self._perm_epoch:
            self._perm_epoch, self._perm = epoch, epoch_permutation(self.n, self.seed, epoch)
        return self._perm[j * self.batch_size:(j + 1) * self.batch_size]

    @property
    def epoch(self) -> int:
        return self.step * self.world_size // self.n_slices

    def state_dict(self) -> dict:
        return dict(slices=self.step * self.world_size, n=self.n, batch_size=self.batch_size, seed=self.seed)

    def load_state_dict(self, state: dict) -> None:
        for k in ("n", "batch_size", "seed"):
            if state[k] != getattr(self, k):
                raise ValueError(f"loader state has {k}={state[k]}, this loader {getattr(self, k)}: resume "
                                 f"with the dataset, batch_size, block_size and seed of the checkpoint")
        if state["slices"] % self.world_size:
            raise ValueError(f"the checkpoint's loader read {state['slices']} micro-batches in all, which "
                             f"world_size={self.world_size} does not divide: resume on a world size that "
                             f"divides gradient_accumulation_steps")
        self.step = state["slices"] // self.world_size


class SequentialLoader:
    """Sampling without replacement: the non-overlapping windows of block_size + 1 tokens (stride
    block_size; window i = tokens [i*T, i*T + T]) in a seeded random order per epoch, sharded by rank with
    the Stream rule above, resumable exactly through state_dict()/load_state_dict()."""

    def __init__(self, data: np.ndarray, batch_size: int, block_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 1337, device: str | torch.device = "cpu"):
        n_windows = (len(data) - 1) // block_size
        if n_windows < 1:
            raise ValueError(_too_short(len(data), block_size))
        self.data, self.block_size, self.device = data, block_size, device
        self.stream = Stream(n_windows, batch_size, rank, world_size, seed,
                              f"{len(data)} tokens give {n_windows} windows of block_size={block_size}")

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> x, y (B, T) int64, y = x shifted by one token."""
        starts = self.stream.next_indices() * self.block_size
        return to_device(*_windows(self.data, starts, self.block_size), self.device)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def state_dict(self) -> dict:
        return self.stream.state_dict() | dict(block_size=self.block_size)

    def load_state_dict(self, state: dict) -> None:
        if state["block_size"] != self.block_size:
            raise ValueError(f"loader state has block_size={state['block_size']}, this loader "
                             f"{self.block_size}: resume with the checkpoint's block_size")
        self.stream.load_state_dict(state)
