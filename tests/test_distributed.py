"""DDP and FSDP2 on CPU with 2 gloo ranks (torchrun in a subprocess) against the 1-rank run with the same
global batch; FSDP2/DDP checkpoints resumed on another world size (2 -> 1, 1 -> 2) and on the same (2 -> 2).

Tolerance: losses agree to rtol 1e-5 (observed 1.2e-7). The ranks sum the same per-sample gradients in another
order (all-reduce / reduce-scatter instead of accumulation in one process; torchrun runs one thread per rank),
so the runs are equal up to float32 rounding, not bitwise; a wrong batch, scale or missed gradient sync
changes the loss at the 1e-2 level."""
import json
import shutil
from pathlib import Path

import conftest
import pytest
import test_train
import torch
from conftest import read_jsonl, train_py
from test_train import TINY, _finetune, _grad_norms, _losses, _metrics, _write_bytes_dataset, run_train

ROOT = Path(__file__).resolve().parent.parent
chat_setup = test_train.chat_setup  # the module fixture: a pretraining run + a chat file
# tied embeddings + mu-loss + mu-centering: where sharded output embeddings go wrong (Modalities #381)
FLAGS = dict(gradient_accumulation_steps=2, tie_embeddings=True, mu_loss=1e-2, mu_centering=True,
             keep_last_k=2)


def torchrun(out_dir: Path, data_root: Path, nproc: int = 2, **overrides) -> list[dict]:
    args = dict(TINY, **FLAGS, out_dir=str(out_dir), data_root=str(data_root), dataset='en') | overrides
    proc = conftest.torchrun(ROOT / 'train.py', [f'--{k}={v}' for k, v in args.items()], nproc, out_dir=out_dir,
                             timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return _metrics(out_dir)


def _close(a: dict, b: dict, steps) -> None:
    for s in steps:
        assert a[s] == pytest.approx(b[s], rel=1e-5), (s, a, b)


def _resume_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    shutil.copy(src / 'ckpt_0000004.pt', dst / 'ckpt.pt')
    return dst


@pytest.fixture(scope='module')
def runs(tmp_path_factory, corpora) -> dict:
    tmp = tmp_path_factory.mktemp('dist')
    text = (corpora / 'text' / 'en.txt').read_bytes()[:100_000]
    _write_bytes_dataset(tmp / 'data' / 'en', text)
    out = dict(tmp=tmp, data=tmp / 'data')
    out['ref'] = _losses(run_train(tmp / 'ref', tmp / 'data', **FLAGS))
    out['ddp'] = _losses(torchrun(tmp / 'ddp', tmp / 'data', parallelism='ddp'))
    out['fsdp'] = _losses(torchrun(tmp / 'fsdp', tmp / 'data', parallelism='fsdp'))
    return out


@pytest.mark.slow
def test_ddp_and_fsdp_losses_equal_one_rank_with_same_global_batch(runs):
    assert sorted(runs['ref']) == sorted(runs['ddp']) == sorted(runs['fsdp']) == list(range(1, 9))
    _close(runs['ddp'], runs['ref'], range(1, 9))
    _close(runs['fsdp'], runs['ref'], range(1, 9))
    for name in ('ddp', 'fsdp'):  # tokens from the data-parallel degree: 2 ranks x 1 micro-step x 4 x 32
        cfg = json.loads((runs['tmp'] / name / 'config.json').read_text())
        assert cfg['world_size'] == 2 and cfg['grad_accum_per_rank'] == 1 and cfg['tokens_per_step'] == 256
        assert [r['tokens'] for r in _metrics(runs['tmp'] / name) if 'loss' in r][:2] == [256, 512]
        ckpt = torch.load(runs['tmp'] / name / 'ckpt.pt', weights_only=True)  # full state dict, tied key kept
        assert ckpt['world_size'] == 2 and ckpt['model']['lm_head.weight'].shape == (256, 32)


@pytest.mark.slow
def test_checkpoints_resume_on_other_world_sizes(runs):
    tmp, data_root = runs['tmp'], runs['data']
    # FSDP2 2 ranks -> 1 process
    r21 = run_train(_resume_copy(tmp / 'fsdp', tmp / 'r21'), data_root, **FLAGS, init_from='resume')
    _close(_losses(r21), runs['ref'], range(5, 9))
    # 1 process -> FSDP2 2 ranks
    r12 = torchrun(_resume_copy(tmp / 'ref', tmp / 'r12'), data_root, parallelism='fsdp', init_from='resume')
    _close(_losses(r12), runs['ref'], range(5, 9))
    # DDP 2 ranks -> DDP 2 ranks
    r22 = torchrun(_resume_copy(tmp / 'ddp', tmp / 'r22'), data_root, parallelism='ddp', init_from='resume')
    _close(_losses(r22), runs['ddp'], range(5, 9))


@pytest.mark.slow
def test_chat_loss_and_grad_norm_do_not_depend_on_the_rank_split(tmp_path, chat_setup):
    """Chat fine-tuning: 2 ranks x batch 1 == 1 rank x batch 2 (loss and gradient norm: the mean over the
    global batch's trained tokens, counted over all ranks); tokens count real tokens on every rank."""
    ref = _finetune(tmp_path / 'ref', chat_setup, batch_size=2, gradient_accumulation_steps=1)
    s = chat_setup
    ddp = torchrun(tmp_path / 'ddp', s['data_root'], dataset=s['dataset'], init_from='finetune',
                   finetune_from=str(s['pre']), finetune_data=str(s['chat']), n_embd=32, block_size=64,
                   max_iters=3, eval_interval=3, learning_rate=1e-2, warmup_iters=1, batch_size=1,
                   gradient_accumulation_steps=2, tie_embeddings=True, mu_loss=0.0, mu_centering=False,
                   parallelism='ddp')
    _close(_losses(ddp), _losses(ref), range(1, 4))
    _close(_grad_norms(ddp), _grad_norms(ref), range(1, 4))
    assert [r['tokens'] for r in ddp if 'loss' in r] == [r['tokens'] for r in ref if 'loss' in r]


def _step_lines() -> range:
    """train.py's lines from the start of one optimizer step to the test for a log point (the step proper)."""
    lines = (ROOT / 'train.py').read_text().splitlines()
    first = lines.index('    lr = lr_at(iter_num, config)') + 1
    last = next(i for i, ln in enumerate(lines) if ln.startswith('    if not (iter_num % log_interval == 0')) + 1
    return range(first, last + 1)


@pytest.mark.slow
def test_chat_step_on_two_ranks_reads_nothing_back(tmp_path, chat_setup):
    """Chat fine-tuning with Coupled Adam on 2 ranks (DDP): no host read of a tensor's value (.item(), bool(),
    .tolist(), int(), nonzero, ...: a host-device sync on CUDA) anywhere in the optimizer step, between log
    points (tests/probe_train.py counts them per train.py line: the CPU stand-in for torch.cuda's sync debug mode,
    which bench/gpu_check.py uses on a GPU). The token counts are host numbers summed over a gloo group."""
    s = chat_setup
    args = dict(TINY, data_root=str(s['data_root']), dataset=s['dataset'], init_from='finetune',
                finetune_from=str(s['pre']), finetune_data=str(s['chat']), n_embd=32, block_size=64, max_iters=4,
                eval_interval=4, log_interval=4, warmup_iters=1, batch_size=1, gradient_accumulation_steps=2,
                optimizer='coupled_adam', parallelism='ddp', out_dir=str(tmp_path / 'run'))
    proc = conftest.torchrun(ROOT / 'tests' / 'probe_train.py', [str(tmp_path / 'probe')] + [
        f'--{k}={v}' for k, v in args.items()], 2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    step = _step_lines()
    for rank in (0, 1):
        reads = json.loads((tmp_path / 'probe' / f'probe_rank{rank}.json').read_text())['reads']
        in_step = [r for r in reads if r[2] == '<module>' and r[1] in step]
        assert in_step == [], in_step
        assert any(r[0] == 'tolist' and r[1] > step[-1] for r in reads)  # the probe sees the log point's read


# -----------------------------------------------------------------------------------------------------------
# Pretraining: the gradient, not only the loss, is that of the mean loss over the global
# batch, for any split of the global batch into micro-steps and ranks.  Adam's update barely depends on the
# gradient's scale (its first step is lr * sign(g)), so a loss that is not divided by the micro-steps, or a rank that
# sums instead of averaging, leaves losses almost unchanged; the logged gradient norm (before clipping: grad_clip=0)
# shows it at once. Every split reads the same 8 sequences per step (data.py's sharding rule), so the norms and
# losses agree up to float32 summation order (rtol 1e-5). Fine-tuning, where micro-batches hold different numbers of
# trained tokens, is covered in test_train.py.

GLOBAL = 8  # sequences per optimizer step


STEPS = dict(max_iters=3, eval_interval=3, lr_decay_iters=3, grad_clip=0.0, seed=3)


SPLITS = {  # name: (ranks, parallelism, micro batch); gradient_accumulation_steps = GLOBAL / micro batch
    '1x8': (0, 'none', 8), '2x4': (0, 'none', 4), '4x2': (0, 'none', 2),
    'ddp 2 ranks x 1 x 4': (2, 'ddp', 4), 'ddp 2 ranks x 2 x 2': (2, 'ddp', 2),
    'fsdp 2 ranks x 2 x 2': (2, 'fsdp', 2),
}


def _run(out, data, ranks, parallelism, micro, **flags):
    args = dict(STEPS, batch_size=micro, gradient_accumulation_steps=GLOBAL // micro, parallelism=parallelism,
                **flags)
    r = train_py(out, data.parent, data.name, nproc=ranks, **args)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return [x for x in read_jsonl(out / 'metrics.jsonl') if 'grad_norm' in x]


@pytest.fixture(scope='module')
def split_runs(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gradscale')
    # untied + mu-loss: the term whose gradient is not a per-token mean must scale the same way
    flags = dict(tie_embeddings=False, mu_loss=1e-2, z_loss=1e-3)
    out = {name: _run(tmp / name.replace(' ', '_'), tiny_dataset, *split, **flags)
           for name, split in SPLITS.items()}
    out['_ckpt'] = {name: torch.load(tmp / name.replace(' ', '_') / 'ckpt.pt', weights_only=True)['model']
                    for name in SPLITS}
    return out


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in SPLITS if n != '1x8'])
def test_gradient_norm_and_loss_equal_for_every_split(split_runs, name):
    ref, got = split_runs['1x8'], split_runs[name]
    assert [r['step'] for r in got] == [r['step'] for r in ref] == [1, 2, 3]
    for a, b in zip(got, ref):
        assert a['grad_norm'] == pytest.approx(b['grad_norm'], rel=1e-5), (name, a, b)
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5), (name, a, b)
        assert a['mu_loss'] == pytest.approx(b['mu_loss'], rel=1e-5)
        assert a['tokens'] == b['tokens']  # tokens per step count every rank: 8 x 32 each step
    assert ref[0]['grad_norm'] > 0.1  # a real gradient (a zero one would make every split agree)


@pytest.mark.slow
@pytest.mark.parametrize('name', [n for n in SPLITS if n != '1x8'])
def test_weights_after_three_steps_equal_for_every_split(split_runs, name):
    ref, got = split_runs['_ckpt']['1x8'], split_runs['_ckpt'][name]
    assert set(got) == set(ref)
    for k in ref:
        a, b = got[k], ref[k]
        if k.endswith('attn.c_attn.bias'):  # drop the key bias: softmax ignores it, so its true gradient is 0
            a, b = torch.cat([a[:32], a[64:]]), torch.cat([b[:32], b[64:]])  # and Adam amplifies rounding noise
        # 1% of one step (lr 1e-2): Adam turns rounding in near-zero gradients into ~1e-5 weight noise,
        # a missing or repeated micro-batch moves weights by ~lr
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"{name}: {k}")
