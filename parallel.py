"""
Data parallelism for train.py under torchrun: TF32 for fp32 matmuls, FSDP2 sharding of a GPT (one
fully_shard unit per block plus the root), over all ranks or, for HSDP, within groups of ranks (one node)
and replicated across them, and sums of host numbers over the ranks (host_sum). DDP needs no helper: train.py
wraps the model in DistributedDataParallel.
"""
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import fully_shard


def set_tf32(device_type: str, enabled: bool) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (bf16 autocast matmuls are unaffected); no-op on CPU."""
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def fsdp_mesh(world_size: int, shard_size: int, device_type: str) -> DeviceMesh:
    """The DeviceMesh for fully_shard: 1-D over all ranks (FSDP2), or 2-D (replicate, shard) for HSDP, where
    each parameter is sharded over `shard_size` ranks (one node) and replicated across world/shard_size
    groups (gradients: reduce-scatter within a group, all-reduce across groups). shard_size 0 = all ranks."""
    if not shard_size or shard_size == world_size:
        return init_device_mesh(device_type, (world_size,))
    return init_device_mesh(device_type, (world_size // shard_size, shard_size),
                            mesh_dim_names=('replicate', 'shard'))


def shard_gpt(model: torch.nn.Module, mesh: DeviceMesh) -> None:
    """FSDP2 in place: one unit per transformer block, then the root (embeddings, ln_f, lm_head; a tied
    wte/lm_head is one parameter of the root unit, so tying is safe)."""
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def host_sum(values: list[int], group: dist.ProcessGroup) -> list[int]:
    """Each of `values` (integers on the host, e.g. token counts) summed over the ranks of `group`, a gloo group:
    the tensor stays on the CPU, so no rank waits for its GPU (an all-reduce of a CUDA tensor read back with
    .item() is a host-device sync every step). Exact up to 2**53."""
    sums = torch.tensor(values, dtype=torch.float64, device='cpu')
    dist.all_reduce(sums, group=group)
    return [int(v) for v in sums.numpy()]  # .numpy() works on CPU tensors only: this can never read a GPU back
