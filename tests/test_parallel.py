"""parallel.py and the GPU training path rehearsed on CPU (gloo ranks under torchrun; no GPU in CI): meta-device
init of a sharded model, FSDP2 with gradient accumulation (both gradient-sync choices), HSDP on a 2x2 mesh,
sharded (DCP) checkpoints (exact resume, resume on another world size, conversion, pruning), portable 1-rank FSDP
checkpoints, sampling after an FSDP run, the device-side non-finite guard, and the torchrun data check.
Losses are compared to the 1-process run with the same global batch at rtol 1e-5 (see test_distributed.py).
Below them, the FSDP2 combinations the README names (Coupled Adam, mu-centering, z-/mu-loss, GQA, ...).

This file is also the worker of the init test, `torchrun --nproc_per_node=2 tests/test_parallel.py init <out.pt>`:
it builds each test model on the meta device, shards it with fully_shard (per block + root, as train.py),
materialises it with to_empty(), poisons every parameter with NaN and calls init_weights(); rank 0 saves the
gathered full tensors.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import numpy as np  # noqa: E402
from conftest import read_jsonl, torchrun, train_py  # noqa: E402
from test_train import TINY, _losses, _metrics, _write_bytes_dataset, run_train  # noqa: E402

import checkpoint  # noqa: E402
import optim  # noqa: E402
from loader import SequentialLoader, get_batch  # noqa: E402
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
    proc = torchrun(__file__, list(args), nproc, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


@pytest.mark.slow
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
        if name == "oec":  # Xavier-normal of each (hidden, d) half (OEC code); the halves are distinct draws
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



# ---------------------------------------------------------------------------------------------- train.py
# tied embeddings + mu-loss + mu-centering (sharded output embedding), 4 global micro-steps: 2 per rank on 2
# ranks (accumulation under FSDP2), 1 per rank on 4 (HSDP 2x2)
ACC = dict(gradient_accumulation_steps=4, tie_embeddings=True, mu_loss=1e-2, mu_centering=True, keep_last_k=3,
           eval_interval=2)


def _torchrun(out_dir: Path, data_root: Path, nproc: int = 2, expect_ok: bool = True, dataset: str = "en",
              **overrides) -> subprocess.CompletedProcess:
    args = dict(TINY, **ACC, out_dir=str(out_dir), data_root=str(data_root), dataset=dataset,
                parallelism="fsdp") | overrides
    proc = torchrun(ROOT / "train.py", [f"--{k}={v}" for k, v in args.items()], nproc, out_dir=out_dir, timeout=400)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _close(a: dict, b: dict, steps) -> None:
    for s in steps:
        assert a[s] == pytest.approx(b[s], rel=1e-5), (s, a, b)


def _resume_copy(src: Path, dst: Path, step: int) -> Path:
    """A run folder whose ckpt.pt is src's checkpoint of `step` (and its shards, if sharded)."""
    dst.mkdir(parents=True)
    shutil.copy(src / f"ckpt_{step:07d}.pt", dst / "ckpt.pt")
    if (src / f"ckpt_{step:07d}.dcp").is_dir():
        shutil.copytree(src / f"ckpt_{step:07d}.dcp", dst / f"ckpt_{step:07d}.dcp")
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpora) -> dict:
    tmp = tmp_path_factory.mktemp("fsdp")
    _write_bytes_dataset(tmp / "data" / "en", (corpora / "text" / "en.txt").read_bytes()[:100_000])
    out = dict(tmp=tmp, data=tmp / "data")
    out["ref"] = _losses(run_train(tmp / "ref", tmp / "data", **ACC))
    for name, kw in dict(lean={}, sync_last=dict(fsdp_reduce_every_micro_step=False),
                         dcp=dict(checkpoint_format="dcp")).items():
        _torchrun(tmp / name, tmp / "data", **kw)
        out[name] = _losses(_metrics(tmp / name))
    _torchrun(tmp / "hsdp", tmp / "data", nproc=4, fsdp_shard_size=2)
    out["hsdp"] = _losses(_metrics(tmp / "hsdp"))
    return out


@pytest.mark.slow
def test_fsdp2_accumulation_both_gradient_sync_choices_equal_one_process(runs):
    """F14: reduce-scatter at every micro-step (lean: only gradient shards held) or only at the last (full
    unsharded gradients between micro-steps): the same losses as one process with the same global batch."""
    assert sorted(runs["lean"]) == sorted(runs["ref"]) == list(range(1, 9))
    _close(runs["lean"], runs["ref"], range(1, 9))
    _close(runs["sync_last"], runs["ref"], range(1, 9))
    cfg = json.loads((runs["tmp"] / "lean" / "config.json").read_text())
    assert cfg["grad_accum_per_rank"] == 2 and cfg["world_size"] == 2


@pytest.mark.slow
def test_hsdp_2x2_mesh_equals_one_process(runs):
    """HSDP: 4 gloo ranks as 2 replica groups x 2 shards (fsdp_shard_size=2) train like one process."""
    _close(runs["hsdp"], runs["ref"], range(1, 9))
    ckpt = torch.load(runs["tmp"] / "hsdp" / "ckpt.pt", weights_only=True)
    assert ckpt["world_size"] == 4 and ckpt["model"]["lm_head.weight"].shape == (256, 32)


@pytest.mark.slow
def test_dcp_checkpoints_resume_exactly_on_any_world_size_and_convert(runs):
    """F15: sharded checkpoints. The run equals the full-format run bitwise; keep_last_k prunes the shards
    with their step file; step 4 resumes on 2 ranks (bitwise) and in 1 process (resharded); the conversion
    gives the single-file checkpoint of the full-format run, which sample.py-style readers load."""
    tmp, data_root = runs["tmp"], runs["data"]
    assert runs["dcp"] == runs["lean"]  # the format does not change training
    run = tmp / "dcp"
    assert sorted(p.name for p in run.glob("ckpt_*")) == [  # keep_last_k=3 of steps 2, 4, 6, 8
        "ckpt_0000004.dcp", "ckpt_0000004.pt", "ckpt_0000006.dcp", "ckpt_0000006.pt", "ckpt_0000008.dcp",
        "ckpt_0000008.pt"]
    meta = torch.load(run / "ckpt.pt", weights_only=True)
    assert meta["model"] is None and meta["dcp"] == "ckpt_0000008.dcp" and meta["step"] == 8
    # same world size: bitwise; 1 process: resharded, equal up to the reduction order
    _torchrun(_resume_copy(run, tmp / "dcp22", 4), data_root, checkpoint_format="dcp", init_from="resume")
    assert {s: v for s, v in _losses_of(tmp / "dcp22").items() if s > 4} == {
        s: v for s, v in runs["dcp"].items() if s > 4}
    r21 = run_train(_resume_copy(run, tmp / "dcp21", 4), data_root, **ACC, checkpoint_format="dcp",
                    init_from="resume")
    _close(_losses(r21), runs["ref"], range(5, 9))
    # one command to the single-file checkpoint: equal to the full-format run's (model and optimizer)
    proc = subprocess.run([sys.executable, str(ROOT / "checkpoint.py"), "convert", f"--out_dir={run}",
                           f"--to={tmp / 'conv'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    conv = torch.load(tmp / "conv" / "ckpt.pt", weights_only=True)
    full = torch.load(tmp / "lean" / "ckpt.pt", weights_only=True)
    assert conv["model"].keys() == full["model"].keys()
    assert all(torch.equal(conv["model"][k], full["model"][k]) for k in full["model"])
    for pid, st in full["optimizer"]["state"].items():
        assert all(torch.equal(conv["optimizer"]["state"][pid][k], v) for k, v in st.items()), pid
    assert "dcp" not in conv and checkpoint.load_checkpoint(tmp / "conv")["step"] == 8
    # readers load the sharded folder itself in one process
    model = checkpoint.load_checkpoint(run)
    weights = checkpoint.model_from_checkpoint(model).state_dict()
    assert all(torch.equal(weights[k], full["model"][k]) for k in full["model"])


def _losses_of(out_dir: Path) -> dict:
    return _losses(_metrics(out_dir))


@pytest.mark.slow
def test_one_rank_fsdp_checkpoint_is_portable_and_fsdp_sample_runs(tmp_path, tiny_dataset):
    """F4: torchrun with 1 FSDP2 rank writes plain tensors (weights_only load, 1-process resume); F3: the
    sample at the end of a 2-rank FSDP2 run (after the state-dict gathers) no longer fails."""
    data_root, name = tiny_dataset.parent, tiny_dataset.name
    kw = dict(gradient_accumulation_steps=2, eval_interval=2, max_iters=4, lr_decay_iters=4)
    _torchrun(tmp_path / "one", data_root, nproc=1, dataset=name, **kw)
    ckpt = torch.load(tmp_path / "one" / "ckpt_0000002.pt", weights_only=True)
    assert all(type(v) is torch.Tensor for v in ckpt["model"].values())
    recs = run_train(_resume_copy(tmp_path / "one", tmp_path / "one1", 2), data_root, dataset=name, **ACC | kw,
                     init_from="resume")
    assert [r["step"] for r in recs if "loss" in r][-1] == 4
    proc = _torchrun(tmp_path / "two", data_root, dataset=name, sample_tokens=16, **kw)
    assert "-" * 80 in proc.stdout


@pytest.mark.slow
def test_torchrun_refuses_to_prepare_data(tmp_path):
    """F17: a dataset that is not prepared stops every rank at once with the data.py command (no barrier wait
    that times out while rank 0 prepares a large corpus), before anything is written."""
    proc = _torchrun(tmp_path / "run", tmp_path / "nodata", expect_ok=False, dataset="owt")
    assert proc.returncode != 0
    assert "python data.py prepare --dataset=owt" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr.replace("ChildFailedError", "") or "train.py:" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "nodata").exists()


@pytest.mark.slow
def test_device_side_nonfinite_guard_equals_host_guard(tmp_path, data_root, monkeypatch):
    """F11: with fused AdamW the non-finite check and the skip run on the device (found_inf) and values are read
    back only every log_interval steps. A skipped step leaves exactly what the host-side skip leaves (the same
    fused kernel, stepped or not from Python), and a stop reports the bad step and applies none after it."""
    real = optim.configure_optimizer

    def fused(host_guard: bool):
        def make(*args, **kwargs):
            opt = real(*args, **dict(kwargs, device_type="cuda"))  # fused=True: also runs on CPU
            if host_guard:
                opt.defaults["fused"] = False  # train.py then reads the flag back and skips in Python
            return opt
        return make
    kw = dict(max_iters=8, skip_nonfinite=True, inject_nonfinite_at_step=3, log_interval=4, eval_interval=4,
              mu_centering=True)
    outs = {}
    for host in (False, True):
        monkeypatch.setattr(optim, "configure_optimizer", fused(host))
        outs[host] = _losses(run_train(tmp_path / f"host{host}", data_root, **kw))
    assert outs[False] == outs[True] and sorted(outs[False]) == [4, 8]
    dev = torch.load(tmp_path / "hostFalse" / "ckpt.pt", weights_only=True)
    host = torch.load(tmp_path / "hostTrue" / "ckpt.pt", weights_only=True)
    assert dev["nonfinite_skipped"] == host["nonfinite_skipped"] == 1
    assert all(torch.equal(dev["model"][k], host["model"][k]) for k in dev["model"])
    monkeypatch.setattr(optim, "configure_optimizer", fused(False))
    with pytest.raises(SystemExit, match=r"non-finite loss inf .* at step 3;.*ckpt_0000002"):
        run_train(tmp_path / "stop", data_root, **dict(kw, skip_nonfinite=False, eval_interval=2))
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text())
    assert summary["diverged"] and summary["step"] == 2
    assert not (tmp_path / "stop" / "ckpt_0000004.pt").exists()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, corpora) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_bytes_dataset(root / "en", (corpora / "text" / "en.txt").read_bytes()[:200_000])
    return root


def test_mfu_uses_one_fixed_peak_and_logs_it(tmp_path, data_root, monkeypatch):
    """In train.py, with a device peak known (here: set for the CPU, as a GPU's datasheet would give it): every
    log line's MFU is the model's FLOPs at that line's rate over the same peak, and config.json names it."""
    import mfu
    from model import GPT, GPTConfig
    monkeypatch.setitem(mfu._PEAKS, ("cpu", torch.float32), (1e9, "cpu: test peak"))
    recs = run_train(tmp_path / "run", data_root, max_iters=3, eval_interval=10)
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["peak_flops"] == 1e9 and cfg["peak_flops_source"] == "cpu: test peak"
    per_token = GPT(GPTConfig(**cfg["model_args"])).flops_per_token(cfg["block_size"])
    logs = [r for r in recs if "tokens_per_sec" in r]
    assert len(logs) == 3
    for r in logs:
        assert r["mfu"] == pytest.approx(per_token * r["tokens_per_sec"] / 1e9, rel=1e-9)


def test_batches_are_contiguous_for_pinned_copies():
    """F12: pin_memory() of a view copies into pinned memory it then cannot reuse; batches come contiguous."""
    tokens = np.arange(10_000, dtype=np.uint16)
    x, y = get_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert x.is_contiguous() and y.is_contiguous() and torch.equal(x[:, 1:], y[:, :-1])
    x, y = SequentialLoader(tokens, 4, 16).next_batch()
    assert x.is_contiguous() and y.is_contiguous()




# -----------------------------------------------------------------------------------------------------------
# Combinations the README says work under FSDP2, on 2 gloo ranks against one process with
# the same global batch: the per-step loss and gradient norm agree to float32 summation order (rtol 1e-5), and so do
# the weights after the run (atol 1e-4, 1% of one step at lr 1e-2: Adam turns rounding in near-zero gradients into
# ~1e-5).  - Coupled Adam on the tied embedding + mu-centering + z-loss + mu-loss (the sharded output embedding is
# where   the mean over the vocabulary and the centering could go wrong); - Coupled Adam untied + the OEC model
# (RoPE, SwiGLU, qk-norm, no bias, Xavier), RMSNorm, GQA, logit   soft-capping and activation checkpointing; - DyISRU
# (softplus) and DyT, the norms whose scalar parameters FSDP2 must shard.

COMBOS = {
    'coupled_adam_tied_mu_centering': dict(optimizer='coupled_adam', tie_embeddings=True, mu_centering=True,
                                           z_loss=1e-3, mu_loss=1e-2),
    'coupled_adam_oec_gqa': dict(optimizer='coupled_adam', tie_embeddings=False, pos='rope', mlp='swiglu',
                                 qk_norm=True, bias=False, init='xavier', norm='rmsnorm', n_head=4, n_kv_head=2,
                                 logit_softcap=30.0, activation_checkpointing=True),
    'dyisru_sp': dict(norm='dyisru_sp', norm_alpha0=1.0, tie_embeddings=False, mu_loss=1e-2),
    'dyt': dict(norm='dyt', mu_centering=True),
}


STEPS = dict(max_iters=4, eval_interval=4, lr_decay_iters=4, batch_size=2, gradient_accumulation_steps=4,
             grad_clip=0.0)


def _run(out, data, nproc, **flags):
    r = train_py(out, data.parent, data.name, nproc=nproc, **STEPS, **flags)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    logs = [x for x in read_jsonl(out / 'metrics.jsonl') if 'grad_norm' in x]
    return logs, torch.load(out / 'ckpt.pt', weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize('combo', list(COMBOS))
def test_fsdp2_two_ranks_equal_one_process(tiny_dataset, tmp_path, combo):
    ref_logs, ref = _run(tmp_path / 'one', tiny_dataset, 0, **COMBOS[combo])
    logs, got = _run(tmp_path / 'fsdp', tiny_dataset, 2, parallelism='fsdp', **COMBOS[combo])
    assert [r['step'] for r in logs] == [r['step'] for r in ref_logs] == [1, 2, 3, 4]
    for a, b in zip(logs, ref_logs):
        for key in ('loss', 'grad_norm', 'ce'):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (combo, key, a, b)
    assert got['world_size'] == 2 and set(got['model']) == set(ref['model'])
    for k, v in ref['model'].items():
        a, b = got['model'][k], v
        if k.endswith('attn.c_attn.bias'):  # the key bias: softmax ignores it, its true gradient is 0
            a, b = torch.cat([a[:32], a[64:]]), torch.cat([b[:32], b[64:]])
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"{combo}: {k}")
    if COMBOS[combo].get('mu_centering'):  # the centred output embedding stays centred under sharding
        assert got['model']['lm_head.weight'].mean(0).abs().max() < 1e-6
    if COMBOS[combo].get('optimizer') == 'coupled_adam':  # Coupled Adam's own group survived
        assert got['optimizer']['param_groups'][-1].get('coupled') is True


if __name__ == "__main__":
    import torch.distributed as dist
    dist.init_process_group("gloo")
    {"init": _worker_init}[sys.argv[1]](*sys.argv[2:])
    dist.barrier()
    dist.destroy_process_group()
