"""Combinations the README says work under FSDP2, on 2 gloo ranks against one process with the same global
batch: the per-step loss and gradient norm agree to float32 summation order (rtol 1e-5), and so do the weights
after the run (atol 1e-4, 1% of one step at lr 1e-2: Adam turns rounding in near-zero gradients into ~1e-5).

- Coupled Adam on the tied embedding + mu-centering + z-loss + mu-loss (the sharded output embedding is where
  the mean over the vocabulary and the centering could go wrong);
- Coupled Adam untied + the OEC model (RoPE, SwiGLU, qk-norm, no bias, Xavier), RMSNorm, GQA, logit
  soft-capping and activation checkpointing;
- DyISRU (softplus) and DyT, the norms whose scalar parameters FSDP2 must shard.
"""
import pytest
import torch
from conftest import read_jsonl, train_py

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
