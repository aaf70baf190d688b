"""evaluation.py: the eval loss train.py logs (estimate_loss: 2 gloo ranks give the same loss and logit diagnostics
as 1 process; the loss is the mean cross-entropy over the batches), and the held-out scoring (`python
evaluation.py`, evaluation.evaluate, score_tokens) on the producers' output: the trained_run fixture scored on its
own dataset and on a two-language dataset data.py prepared with the same tokenizer. Every figure is recomputed
independently: the cross-entropy with torch.nn.functional over the same consecutive windows of the checkpoint's
GPT, bits per byte from meta.json's byte counts (themselves checked against the decoded validation text). Another
tokenizer is refused before any work; the run folder's training state is only read."""
import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import ROOT, TINY_PLAYS, read_jsonl

import data
import evaluation
from checkpoint import load_checkpoint, model_from_checkpoint
from model import GPT, GPTConfig

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


@pytest.fixture(scope='module')
def data_root(tiny_dataset, tmp_path_factory) -> Path:
    """tiny (trained_run's dataset), twolang (four other plays as languages 'en' and 'xx', the same tokenizer)
    and other (one play, its own 400-token BPE: another tokenizer)."""
    root = tmp_path_factory.mktemp('evaldata')
    shutil.copytree(tiny_dataset, root / 'tiny')
    plays = [p for p in data.shakespeare_files() if p.name not in TINY_PLAYS]
    plays = sorted(plays, key=lambda p: p.stat().st_size)[:5]  # the shortest: seconds to tokenize
    data.prepare_dataset('twolang', data_root=root, tokenizer=str(tiny_dataset / 'tokenizer.model'),
                         sources={'en': [str(p) for p in plays[:2]], 'xx': [str(p) for p in plays[2:4]]},
                         txt_unit='file', num_proc=1)
    data.prepare_dataset('other', data_root=root, input=[str(plays[4])], vocab_size=400, num_proc=1)
    return root


def _reference_nats(model: GPT, tokens: np.ndarray, T: int) -> float:
    """Total cross-entropy (nats) of tokens[1:], windows tokens[s:s+T] -> tokens[s+1:s+T+1], one at a time."""
    ids = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, T):
            y = ids[s + 1:s + T + 1]
            total += F.cross_entropy(model(ids[s:s + len(y)][None])[0], y, reduction='sum').item()
    return total


def _hashes(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_scores_a_run_on_datasets_and_languages_leaving_the_training_state(trained_run, data_root, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    before = _hashes(run)
    p = subprocess.run([sys.executable, str(ROOT / 'evaluation.py'), f'--out_dir={run}', '--datasets=tiny,twolang',
                        f'--data_root={data_root}', '--device=cpu', '--batch_size=3'],
                       capture_output=True, text=True, timeout=300, env={'OMP_NUM_THREADS': '1', 'PATH': ''})
    assert p.returncode == 0, p.stderr[-3000:]
    after = _hashes(run)
    assert set(after) == set(before) | {'evals.jsonl'}
    assert {k: after[k] for k in before} == before  # ckpt.pt, metrics.jsonl, config.json, summary.json untouched
    tiny, two = read_jsonl(run / 'evals.jsonl')

    model = model_from_checkpoint(load_checkpoint(run)).eval()
    T = model.config.block_size
    assert tiny['block_size'] == T and tiny['logits_dtype'] == 'float32' and tiny['mu_centering'] is False
    assert tiny['step'] == 2 and tiny['dataset_id'] == data.dataset_identity(data_root / 'tiny')['dataset_id']
    val = data.load_tokens(data_root / 'tiny', 'val')
    nats, meta = _reference_nats(model, val, T), data.load_meta(data_root / 'tiny')
    assert tiny['val_tokens'] == len(val) - 1 and tiny['val_bytes'] == meta['val_bytes']
    assert tiny['val_loss'] == pytest.approx(nats / (len(val) - 1), rel=1e-5)
    assert tiny['val_bpb'] == pytest.approx(nats / (math.log(2) * meta['val_bytes']), rel=1e-5)
    assert not any(k.startswith('val_loss/') for k in tiny)  # one language: no per-language keys

    meta, total_nats, total_bytes = data.load_meta(data_root / 'twolang'), 0.0, 0
    tok = data.dataset_tokenizer(data_root / 'twolang')
    for lang in ('en', 'xx'):
        val = data.load_tokens(data_root / 'twolang', f'val_{lang}')
        nats, n_bytes = _reference_nats(model, val, T), meta['languages'][lang]['val_bytes']
        assert two[f'val_loss/{lang}'] == pytest.approx(nats / (len(val) - 1), rel=1e-5)
        assert two[f'val_bpb/{lang}'] == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-5)
        # the byte count: the UTF-8 bytes of the language's validation documents (EOT separators carry none)
        docs = np.split(np.asarray(val), np.flatnonzero(np.asarray(val) == meta['eot'])[1:])
        text_bytes = sum(len(tok.decode(d[1:].tolist()).encode('utf-8')) for d in docs)
        assert abs(text_bytes - n_bytes) <= meta['languages'][lang]['val_docs']
        total_nats, total_bytes = total_nats + nats, total_bytes + n_bytes
    assert two['val_bpb'] == pytest.approx(total_nats / (math.log(2) * total_bytes), rel=1e-5)
    assert two['val_tokens'] == two['val_tokens/en'] + two['val_tokens/xx']
    assert two['val_loss/en'] != two['val_loss/xx']

    again = evaluation.evaluate(out_dir=str(run), datasets=['tiny'], data_root=str(data_root), batch_size=8)
    assert again[0]['val_loss'] == pytest.approx(tiny['val_loss'], rel=1e-6)  # batching does not change it
    assert len(read_jsonl(run / 'evals.jsonl')) == 3  # appended


@pytest.mark.slow
def test_a_dataset_with_another_tokenizer_is_refused_before_any_work(trained_run, data_root, tmp_path):
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    p = subprocess.run([sys.executable, str(ROOT / 'evaluation.py'), f'--out_dir={run}', '--datasets=tiny,other',
                        f'--data_root={data_root}', '--device=cpu'], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and 'Traceback' not in p.stderr
    assert p.stderr.startswith('evaluation.py: ') and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "'other'" in p.stderr or '/other' in p.stderr and 'tokenizer' in p.stderr
    assert not (run / 'evals.jsonl').exists()  # tiny, listed first, was not scored either


def _untied_copy(model: GPT) -> GPT:
    """The same function with lm_head a parameter of its own (so its rows can move without moving wte)."""
    cfg = dict(vars(model.config), tie_embeddings=False)
    untied = GPT(GPTConfig(**cfg)).eval()
    untied.load_state_dict(model.state_dict())
    return untied


def test_bf16_logits_and_mu_centering_separate_rounding_from_the_model(trained_run):
    model = model_from_checkpoint(load_checkpoint(trained_run)).eval()
    x = torch.randint(0, model.config.vocab_size, (2, 16))
    capped = GPT(GPTConfig(**dict(vars(model.config), logit_softcap=2.0))).eval()
    for m in (model, capped):  # output_logits is the model's own head
        torch.testing.assert_close(evaluation.output_logits(m, m.hidden_states(x)), m(x), rtol=0, atol=0)
    tokens = np.asarray(data.load_tokens(Path(load_checkpoint(trained_run)['config']['data_root']) / 'tiny', 'val'))
    tokens = tokens[:2000]
    score = lambda m, **kw: evaluation.score_tokens(m, tokens, batch_size=16, **kw)  # noqa: E731
    plain = score(model)
    # tied model: centering acts on the output side only (centering the shared matrix would move the inputs too)
    assert score(model, mu_centering=True)['nats'] == pytest.approx(plain['nats'], rel=1e-5)
    assert model.transformer.wte.weight is model.lm_head.weight

    # a gauge shift of the output embedding, e_i <- e_i + v, makes the mean logit ~ 800 and leaves fp32 alone
    shifted = _untied_copy(model)
    with torch.no_grad():
        h_bar = model.hidden_states(torch.from_numpy(tokens[None, :32].astype(np.int64)))[0].mean(0)  # (C,)
        shifted.lm_head.weight += 800 * h_bar / h_bar.dot(h_bar)
    fp32 = score(shifted)
    assert fp32['logits_mean_mean'] > 400 and abs(plain['logits_mean_mean']) < 10
    assert fp32['nats'] / fp32['tokens'] == pytest.approx(plain['nats'] / plain['tokens'], abs=2e-3)
    bf16, bf16_plain = score(shifted, logits_dtype='bfloat16'), score(model, logits_dtype='bfloat16')
    assert (bf16['nats'] - bf16_plain['nats']) / bf16['tokens'] > 0.3  # rounding at |logit| ~ 800 costs nats
    assert abs(bf16_plain['nats'] - plain['nats']) / plain['tokens'] < 0.05
    centered = score(shifted, logits_dtype='bfloat16', mu_centering=True)
    assert centered['nats'] == pytest.approx(score(model, logits_dtype='bfloat16', mu_centering=True)['nats'],
                                             rel=1e-3)
    assert abs(centered['logits_mean_mean']) < 1e-2


@pytest.mark.slow
def test_a_hugging_face_folder_scores_as_its_run(trained_run, data_root, tmp_path):
    import checkpoint
    checkpoint.convert(trained_run, hf=tmp_path / 'hf')
    run = evaluation.evaluate(out_dir=str(trained_run), datasets=['tiny'], data_root=str(data_root),
                              batch_size=64, write=False)[0]
    spm = str(data_root / 'tiny' / 'tokenizer.model')
    hf = evaluation.evaluate(hf_dir=str(tmp_path / 'hf'), tokenizer=spm, datasets=['tiny'],
                             data_root=str(data_root), batch_size=64)[0]
    assert hf['val_loss'] == pytest.approx(run['val_loss'], rel=1e-5) and hf['step'] is None
    assert hf['val_bpb'] == pytest.approx(run['val_bpb'], rel=1e-5)
    assert read_jsonl(tmp_path / 'hf' / 'evals.jsonl')[0]['val_loss'] == hf['val_loss']
    with pytest.raises(ValueError, match='another tokenizer'):
        evaluation.evaluate(hf_dir=str(tmp_path / 'hf'), tokenizer=spm, datasets=['other'],
                            data_root=str(data_root))


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
