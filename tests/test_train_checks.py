"""Tests of train_checks.py: the checks train.py runs on its config before any work (choices, ranges,
contradictions, the data folder, the loaded weights' shape), each through a real train.py run that must stop with
one message naming the key and the fix, having written nothing."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_train import _losses, _snapshot, _write_bytes_dataset, run_train

import data


@pytest.fixture(scope='module')
def data_root(tmp_path_factory, corpora) -> Path:
    root = tmp_path_factory.mktemp('data')
    _write_bytes_dataset(root / 'en', (corpora / 'text' / 'en.txt').read_bytes()[:200_000])
    return root


def _fails(tmp_path, data_root, match: str, env: dict | None = None, **overrides) -> None:
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with pytest.raises(SystemExit, match=match):
            run_train(tmp_path / 'bad', data_root, **overrides)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert not (tmp_path / 'bad' / 'metrics.jsonl').exists()  # stopped before any work


def test_bad_config_fails_before_any_work(tmp_path, data_root):
    _fails(tmp_path, data_root, r"parallelism='ddp' needs torchrun's environment", parallelism='ddp')
    torchrun_env = dict(RANK='0', WORLD_SIZE='2', LOCAL_RANK='0')
    _fails(tmp_path, data_root, r"gradient_accumulation_steps=3 .* divisible by the world size 2",
           env=torchrun_env, parallelism='ddp', gradient_accumulation_steps=3)
    _fails(tmp_path, data_root, r"torchrun started 2 processes but parallelism='none'", env=torchrun_env)
    _fails(tmp_path, data_root, r"z_loss=-0.1 is outside its range \[0, inf\)", z_loss=-0.1)
    _fails(tmp_path, data_root, r"optimizer='sgd' is not one of", optimizer='sgd')
    _fails(tmp_path, data_root, r"dtype='float16' .* use bfloat16", dtype='float16')
    _fails(tmp_path, data_root, r"unknown norm='batchnorm'", norm='batchnorm')
    _fails(tmp_path, data_root, r"n_embd=30 is not divisible by n_head=4", n_embd=30, n_head=4)
    _fails(tmp_path, data_root, r"model_preset='gpt5' is unknown", model_preset='gpt5')
    _fails(tmp_path, data_root, r"ckpt.pt does not exist", init_from='resume')
    _fails(tmp_path, data_root, r"1 x 9999 = 9999 are needed per step", batch_size=9999)
    _fails(tmp_path, data_root, r"cannot prepare dataset 'nope'.*python data.py prepare", dataset='nope')
    _fails(tmp_path, data_root, r"wsd schedule", schedule='wsd', wsd_decay_frac=0.0)


def test_resume_with_another_model_shape_fails(tmp_path, data_root):
    run_train(tmp_path / 'run', data_root, max_iters=1, eval_interval=1)
    with pytest.raises(SystemExit, match=r"n_layer: 2 there vs 3 set.*Drop --n_layer"):
        run_train(tmp_path / 'run', data_root, init_from='resume', n_layer=3)


def test_resume_or_finetune_on_other_data_stops_before_anything_is_touched(tmp_path, tiny_dataset):
    root = tmp_path / 'data'
    shutil.copytree(tiny_dataset, root / 'tiny')
    out = tmp_path / 'run'
    run_train(out, root, dataset='tiny', max_iters=1, eval_interval=1)
    run_before, data_before = _snapshot(out), _snapshot(root)
    with pytest.raises(SystemExit, match=r"'resume' trains with the checkpoint's tokenizer.*drop --tokenizer"):
        run_train(out, root, dataset='tiny', init_from='resume', tokenizer='gpt2')
    assert _snapshot(root) == data_before and _snapshot(out) == run_before  # today: data/tiny re-prepared
    meta = data.load_meta(root / 'tiny')
    data.prepare_dataset('tiny', data_root=root, vocab_size=400, num_proc=1, rebuild_dataset=True)  # rebuilt
    assert data.load_meta(root / 'tiny')['identity'] != meta['identity']
    with pytest.raises(SystemExit, match=r"the dataset folder .*tiny, the tokenizer of .*tiny changed since the "
                                         r"checkpoint"):
        run_train(out, root, dataset='tiny', init_from='resume', max_iters=2)
    assert _snapshot(out) == run_before
    chat = tmp_path / 'chat.jsonl'
    chat.write_text(json.dumps({'messages': [{'role': 'user', 'content': 'hi'},
                                             {'role': 'assistant', 'content': 'hello'}]}) + '\n')
    with pytest.raises(SystemExit, match=r"tokenizer of .*tiny changed since the checkpoint"):
        run_train(tmp_path / 'ft', root, dataset='tiny', init_from='finetune', finetune_from=str(out),
                  finetune_data=str(chat), batch_size=1)
    assert not (tmp_path / 'ft').exists()


def test_data_files_are_checked_against_meta(tmp_path, tiny_dataset, data_root):
    root = tmp_path / 'data'
    shutil.copytree(tiny_dataset, root / 'short')
    ids = np.fromfile(root / 'short' / 'val.bin', dtype=np.uint16)
    ids[:-1].tofile(root / 'short' / 'val.bin')  # one token short: a whole number of uint16, but not meta's count
    _fails(tmp_path, root, r"val.bin holds \d+ tokens but meta.json records \d+: .*delete .*short and prepare it "
                           r"again", dataset='short')
    shutil.copytree(data_root / 'en', root / 'odd')  # a nanoGPT folder (no meta.json): only the dtype is known
    with open(root / 'odd' / 'train.bin', 'ab') as f:
        f.write(b'\x00')
    _fails(tmp_path, root, r"train.bin: \d+ bytes is no whole number of uint16 tokens", dataset='odd')


def test_values_and_contradictions_are_checked_before_any_work(tmp_path, data_root):
    _fails(tmp_path, data_root, r"min_lr=0.1 is above learning_rate=0.01", min_lr=0.1, learning_rate=0.01)
    _fails(tmp_path, data_root, r"warmup_iters=-1 is outside its range \[0, inf\)", warmup_iters=-1)
    _fails(tmp_path, data_root, r"learning_rate=1e\+39 is not a finite float32 value", learning_rate=1e39)
    _fails(tmp_path, data_root, r"max_iters=-1 is outside its range \[0, inf\)", max_iters=-1)
    _fails(tmp_path, data_root, r"beta1=1.0 is outside its range \[0, 1\)", beta1=1.0)
    _fails(tmp_path, data_root, r"beta2=-0.5 is outside its range \[0, 1\)", beta2=-0.5)
    _fails(tmp_path, data_root, r"vocab_multiple=0 is outside its range \[1, inf\)", vocab_multiple=0)
    _fails(tmp_path, data_root, r"decay_lr=False asks for a constant .* schedule='wsd'", decay_lr=False,
           schedule='wsd')
    _fails(tmp_path, data_root, r"dropout=1.5 is outside its range \[0, 1\)", dropout=1.5)
    _fails(tmp_path, data_root, r"finetune_data is used only with init_from='finetune'", finetune_data='x.jsonl')
    recs = run_train(tmp_path / 'const', data_root, decay_lr=False, max_iters=2, warmup_iters=0)  # nanoGPT's way
    assert [r['lr'] for r in recs if 'lr' in r] == [1e-2, 1e-2]
    assert json.loads((tmp_path / 'const' / 'config.json').read_text())['schedule'] == 'constant'


@pytest.mark.parametrize('block, ok', [(39, True), (40, False), (41, False)])
def test_val_split_must_be_longer_than_block_size(tmp_path, block, ok):
    """400 bytes: 360 train, 40 val tokens. A window needs block_size + 1 tokens, so block_size 39 is the
    largest that works; 40 and 41 stop before any work, naming val.bin and the fix."""
    _write_bytes_dataset(tmp_path / 'data' / 'small', bytes(range(65, 65 + 20)) * 20)
    args = dict(dataset='small', block_size=block, max_iters=1, eval_interval=1, batch_size=2)
    if ok:
        assert _losses(run_train(tmp_path / 'run', tmp_path / 'data', **args)) == {1: pytest.approx(5.5, abs=0.6)}
    else:
        _fails(tmp_path, tmp_path / 'data', rf'val\.bin has 40 tokens, not more than block_size={block}', **args)


@pytest.mark.parametrize('block, ok', [(32, True), (33, False)])
def test_resume_block_size_up_to_the_models_context(tmp_path, data_root, block, ok):
    """A resumed or fine-tuned run may train on windows up to the model's context (32 here), not beyond."""
    run_train(tmp_path / 'run', data_root, max_iters=2, eval_interval=2)
    if ok:
        assert max(_losses(run_train(tmp_path / 'run', data_root, max_iters=3, eval_interval=3, block_size=block,
                                     init_from='resume'))) == 3
    else:
        with pytest.raises(SystemExit, match=rf"block_size={block} is longer than the model's context 32"):
            run_train(tmp_path / 'run', data_root, max_iters=3, eval_interval=3, block_size=block,
                      init_from='resume')
