"""FSDP2 on CPU with 2 gloo ranks: meta-device init of a sharded model equals the 1-process init.

This file is also the worker: `torchrun --nproc_per_node=2 tests/test_fsdp.py init <out.pt>` builds each test
model on the meta device, shards it with fully_shard (per block + root, as train.py), materialises it with
to_empty(), poisons every parameter with NaN and calls init_weights(); rank 0 saves the gathered full tensors.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from model import GPT, PRESETS, GPTConfig  # noqa: E402

SEED = 1234
SMALL = dict(vocab_size=256, block_size=32, n_layer=2, n_embd=64)
CONFIGS = {  # every oec-* preset's architecture (SwiGLU + Xavier, untied), and GPT-2's (GELU, tied)
    "oec": {k: v for k, v in PRESETS["oec-16m"].items() if k not in SMALL} | SMALL,
    "gpt2": {k: v for k, v in PRESETS["gpt2"].items() if k not in SMALL} | SMALL | dict(n_head=4),
}


def _meta_init(name: str, shard: bool) -> GPT:
    torch.manual_seed(SEED)
    with torch.device("meta"):
        model = GPT(GPTConfig(**CONFIGS[name]))
    if shard:
        from torch.distributed.fsdp import fully_shard
        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # what an uninitialised weight may hold
    model.init_weights()
    return model


def _worker_init(out: str) -> None:
    import torch.distributed as dist
    result = {}
    for name in CONFIGS:
        model = _meta_init(name, shard=True)
        result[name] = {k: v.full_tensor() for k, v in model.named_parameters()}
        result[name + "/tied"] = model.transformer.wte.weight is model.lm_head.weight
    if dist.get_rank() == 0:
        torch.save(result, out)


def torchrun_worker(tmp_path: Path, *args: str, nproc: int = 2) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "exitcode: -6" in proc.stderr:  # rare gloo transport SIGABRT: see test_distributed
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def test_fsdp2_meta_init_equals_one_process_init(tmp_path):
    """F1: SwiGLU's fused c_fc was initialised through chunk() views, which on a DTensor shard are copies:
    the real weight kept to_empty()'s contents (NaN at step 1). Now every parameter is finite, has the
    intended std, and equals (bitwise) the 1-process meta init from the same seed, shard for shard."""
    torchrun_worker(tmp_path, "init", str(tmp_path / "init.pt"))
    sharded = torch.load(tmp_path / "init.pt", weights_only=True)
    for name in CONFIGS:
        ref = dict(_meta_init(name, shard=False).named_parameters())
        assert sharded[name].keys() == ref.keys()
        for k, v in sharded[name].items():
            assert torch.isfinite(v).all(), (name, k)
            assert torch.equal(v, ref[k].detach()), (name, k)
        c = GPTConfig(**CONFIGS[name])
        if name == "oec":  # Xavier-normal of each (hidden, d) half (OEC §1.8); the halves are distinct draws
            w = sharded[name]["transformer.h.0.mlp.c_fc.weight"]
            hidden = w.size(0) // 2
            for half in w.chunk(2):
                assert half.std().item() == pytest.approx((2 / (c.n_embd + hidden)) ** 0.5, rel=0.05)
            assert not torch.equal(w[:hidden], w[hidden:])
        else:  # tied: wte is lm_head under FSDP2 too
            assert sharded[name + "/tied"]
            assert sharded[name]["transformer.wte.weight"].std().item() == pytest.approx(0.02, rel=0.05)
        # ranks draw different shards (DTensor's CPU random ops would give both ranks the same rows)
        wte = sharded[name]["transformer.wte.weight"]
        assert not torch.equal(wte[:128], wte[128:])


if __name__ == "__main__":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    {"init": _worker_init}[sys.argv[1]](*sys.argv[2:])
    dist.barrier()
    dist.destroy_process_group()
