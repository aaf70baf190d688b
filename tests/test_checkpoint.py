"""checkpoint.py: atomic writes, pruning by step, corrupt and unwritable checkpoints, and load_run as every
consumer uses it (sample.py, ner.py's GPT backbone). Run folders come from train.py on a data.py dataset."""
import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from test_train import TINY, run_train

import checkpoint
import data
from checkpoint import CheckpointError, load_checkpoint, load_run


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_dataset):
    """A default-style train.py run (tokenizer='' = the dataset's own BPE) with checkpoints at steps 1, 2."""
    out = tmp_path_factory.mktemp('ckpt') / 'run'
    run_train(out, tiny_dataset.parent, dataset=tiny_dataset.name, max_iters=2, eval_interval=1, keep_last_k=2)
    return out


def _copy(run, tmp_path):
    dst = tmp_path / 'run'
    shutil.copytree(run, dst)
    return dst


def test_load_run_returns_the_runs_model_tokenizer_config_and_step(run, tiny_dataset):
    r = load_run(run)
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    assert r.step == ckpt['step'] == 2 and r.config['dataset'] == tiny_dataset.name
    assert all(torch.equal(v, ckpt['model'][k]) for k, v in r.model.state_dict().items())
    assert not r.model.training
    ref = data.dataset_tokenizer(tiny_dataset)
    assert r.tokenizer.encode('To be, or not to be') == ref.encode('To be, or not to be')
    assert ckpt['data_identity']['tokenizer_id'] == data.tokenizer_identity(ref)
    with pytest.raises(CheckpointError, match='another tokenizer.*drop --tokenizer'):
        load_run(run, tokenizer='gpt2')  # another tokenizer would decode the ids to other text


def test_ner_gpt_backbone_reads_a_default_train_run(run):
    """ner.py found no tokenizer for a default run (it read config['tokenizer'], which is '')."""
    import nertagger
    model, tok = nertagger.load_gpt_backbone(str(run), 3, '')
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    assert all(torch.equal(model.gpt.state_dict()[k], v) for k, v in ckpt['model'].items())
    assert tok.tok.vocab_size == 512 and tok.pad == tok.tok.eot


def test_moved_dataset_folder_is_found_beside_the_run(run, tiny_dataset, tmp_path):
    """The recorded tokenizer path is gone (the data moved with the run): the dataset folder beside the run
    folder is used, and it is checked to be the same tokenizer."""
    moved = _copy(run, tmp_path)
    cfg_ckpt = torch.load(moved / 'ckpt.pt', weights_only=True)
    cfg_ckpt['config'] = dict(cfg_ckpt['config'], tokenizer_spec=str(tmp_path / 'gone' / 'tokenizer.model'),
                              data_root='data')
    torch.save(cfg_ckpt, moved / 'ckpt.pt')
    shutil.copytree(tiny_dataset, tmp_path / 'data' / tiny_dataset.name)
    assert load_run(moved).tokenizer.vocab_size == 512


def test_resolve_init_takes_the_runs_keys_but_not_the_set_or_launch_ones(run):
    """A resume takes every key of the run's config.json except the keys set now and the LAUNCH_KEYS; a finetune
    takes the pretraining run's dataset and data_root, and a dataset set to another folder is refused naming the
    fix; scratch loads nothing and changes nothing."""
    import configurator
    run_cfg = json.loads((run / 'config.json').read_text())
    fresh = configurator.script_defaults(str(ROOT / 'train.py'))
    cfg = dict(fresh, init_from='resume', out_dir=str(run), max_iters=7, device='meta')
    ckpt = checkpoint.resolve_init(cfg, frozenset({'init_from', 'out_dir', 'max_iters'}))
    assert ckpt['step'] == 2 and cfg['max_iters'] == 7 and cfg['out_dir'] == str(run)
    assert cfg['device'] == 'meta'  # a launch key stays this launch's, even when not set
    assert {k for k in fresh if cfg[k] != run_cfg.get(k, cfg[k])} <= {'max_iters', *checkpoint.LAUNCH_KEYS}
    assert cfg['n_embd'] == run_cfg['n_embd'] != fresh['n_embd'] and cfg['dataset'] == run_cfg['dataset']
    cfg = dict(fresh, init_from='finetune', finetune_from=str(run))
    checkpoint.resolve_init(cfg, frozenset({'init_from', 'finetune_from'}))
    assert (cfg['dataset'], cfg['data_root']) == (run_cfg['dataset'], run_cfg['data_root'])
    cfg = dict(fresh, init_from='finetune', finetune_from=str(run), dataset='other')
    with pytest.raises(CheckpointError, match="uses the pretraining run's dataset .*not 'other': drop --dataset"):
        checkpoint.resolve_init(cfg, frozenset({'init_from', 'finetune_from', 'dataset'}))
    cfg = dict(fresh)
    assert checkpoint.resolve_init(cfg, frozenset()) is None and cfg == fresh


def test_prune_keeps_newest_by_step_and_only_our_files(tmp_path):
    for name in ('ckpt_0000009.pt', 'ckpt_10000000.pt', 'ckpt_0000002.pt', 'ckpt_best.pt', 'ckpt_0000003.pt.bak',
                 'ckpt_20000000.pt'):
        (tmp_path / name).write_bytes(b'x')
    removed = checkpoint.prune(tmp_path, step=10_000_000, keep_last_k=2)
    # by number, not by name (ckpt_10000000 sorts before ckpt_0000009 as text: a text sort would drop it)
    assert sorted(p.name for p in removed) == ['ckpt_0000002.pt']
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ['ckpt_0000003.pt.bak', 'ckpt_0000009.pt', 'ckpt_10000000.pt', 'ckpt_20000000.pt',
                    'ckpt_best.pt']  # a later step (another lineage) and other names are never ours to remove


def test_save_is_atomic_and_prunes(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save_checkpoint({'model': {'w': torch.full((2,), float(step))}, 'model_args': {}, 'step': step},
                                   tmp_path, step, keep_last_k=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt', 'ckpt_0000002.pt', 'ckpt_0000003.pt']
    assert os.path.samefile(tmp_path / 'ckpt.pt', tmp_path / 'ckpt_0000003.pt')
    assert load_checkpoint(tmp_path)['step'] == 3


def test_ckpt_pt_is_complete_at_every_moment_of_a_save(tmp_path, monkeypatch):
    """Before and after every file operation of a save (the write, each rename and link), ckpt.pt loads as a
    complete checkpoint: the previous one until the final rename, the new one after it; never a partial file."""
    checkpoint.save_checkpoint({'model': {'w': torch.ones(3)}, 'model_args': {}, 'step': 1}, tmp_path, 1, 2)
    seen = []

    def spy(real):
        def op(*args):
            seen.append(load_checkpoint(tmp_path)['step'])
            out = real(*args)
            if hasattr(args[-1], 'flush'):
                args[-1].flush()  # the bytes written so far are on disk, as a kill would leave them
            seen.append(load_checkpoint(tmp_path)['step'])
            return out
        return op
    for module, name in ((torch, 'save'), (os, 'replace'), (os, 'link')):
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    checkpoint.save_checkpoint({'model': {'w': torch.zeros(3)}, 'model_args': {}, 'step': 2}, tmp_path, 2, 2)
    monkeypatch.undo()
    assert len(seen) >= 6 and seen == sorted(seen) and seen[0] == 1 and seen[-1] == 2, seen
    assert torch.equal(load_checkpoint(tmp_path)['model']['w'], torch.zeros(3))


def test_full_disk_gives_one_message_and_removes_the_partial_file(tmp_path, monkeypatch):
    checkpoint.save_checkpoint({'model': {}, 'model_args': {}, 'step': 1}, tmp_path, 1, keep_last_k=2)

    def full_disk(obj, f):
        f.write(b'partial bytes')
        raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(CheckpointError, match=r'step-2 checkpoint .*the disk is full \([\d,.]+ MB free\): free '
                                              r'space or write elsewhere.*still holds the previous'):
        checkpoint.save_checkpoint({'model': {}}, tmp_path, 2, keep_last_k=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt', 'ckpt_0000001.pt']  # no .tmp left
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)['step'] == 1


@pytest.mark.parametrize('error', [OSError(errno.ENOSPC, 'No space left on device'),
                                   RuntimeError('[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0'),
                                   RuntimeError('PytorchStreamWriter failed writing file data/0: file write failed')])
def test_a_full_disk_says_so_and_names_the_leftovers_that_fill_it(tmp_path, monkeypatch, error):
    """torch.save's RuntimeError when the disk fills as the file closes is a full disk too (not a traceback);
    a leftover temporary folder of a killed write beside the checkpoint is named with its size."""
    leftover = tmp_path / 'ckpt_0000009.dcp.tmp'
    leftover.mkdir()
    (leftover / '__0_0.distcp').write_bytes(b'x' * 2_000_000)

    def full_disk(obj, f):
        f.write(b'partial bytes')
        raise error
    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(CheckpointError, match=rf'the disk is full .*{leftover} \(2.0 MB\)'):
        checkpoint.save_checkpoint({'model': {}}, tmp_path, 2, keep_last_k=2)
    assert not list(tmp_path.glob('ckpt*.pt*'))


def test_a_missing_ckpt_pt_names_the_intact_step_file(run, tmp_path):
    kept = _copy(run, tmp_path)
    (kept / 'ckpt.pt').unlink()
    with pytest.raises(CheckpointError, match=rf"ckpt.pt not found.*{kept / 'ckpt_0000002.pt'} \(step 2\) is intact"):
        load_checkpoint(kept)
    r = subprocess.run([sys.executable, 'train.py', f'--out_dir={kept}', '--init_from=resume'], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'Traceback' not in r.stderr and f"ln {kept / 'ckpt_0000002.pt'}" in r.stderr


def test_truncated_ckpt_names_the_newest_intact_step_file(run, tmp_path):
    broken = _copy(run, tmp_path)
    (broken / 'ckpt.pt').unlink()
    os.link(broken / 'ckpt_0000002.pt', broken / 'ckpt.pt')  # as train.py writes it (copytree copied it)
    size = (broken / 'ckpt.pt').stat().st_size
    with open(broken / 'ckpt.pt', 'r+b') as f:  # ckpt.pt is a hard link of ckpt_0000002.pt: both break
        f.truncate(size // 2)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(broken)
    msg = str(e.value)
    assert 'truncated or corrupt' in msg and 'ckpt_0000001.pt (step 1)' in msg and 'cp ' in msg
    assert 'weights_only' not in msg
    ckpt = load_checkpoint(broken / 'ckpt_0000001.pt')  # the named file does load
    assert ckpt['step'] == 1


def test_a_pickled_object_is_refused_without_advising_weights_only_false(tmp_path):
    (tmp_path / 'ckpt.pt').write_bytes(b'')
    torch.save({'model': {}, 'model_args': {}, 'evil': pickle.PickleError('x')}, tmp_path / 'ckpt.pt')
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert 'truncated or corrupt' in str(e.value) and 'weights_only' not in str(e.value)
    assert 'no intact ckpt_<step>.pt' in str(e.value)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match=r'ckpt.pt not found: pass --out_dir'):
        load_run(tmp_path)


def test_write_json_is_atomic(tmp_path):
    checkpoint.write_json(tmp_path / 'a.json', {'x': 1})
    assert json.loads((tmp_path / 'a.json').read_text()) == {'x': 1} and not list(tmp_path.glob('*.tmp'))


def test_checkpoint_loads_with_weights_only_and_tiny_run_shape(run):
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    assert ckpt['model_args']['n_layer'] == TINY['n_layer'] and type(ckpt['config']) is dict


def test_convert_cli_writes_a_hf_folder_and_refuses_before_writing(run, tmp_path, capsys):
    """`python checkpoint.py convert --out_dir=RUN --hf=DIR [--to=DIR]` (configurator keys): writes a Hugging
    Face folder of train.py's run; an existing model there, no target, or the old positional form stop with one
    message before anything is written; -h lists the keys with defaults and comments."""
    from hf import load_gpt2
    hf = tmp_path / 'hf'
    checkpoint.main(['convert', f'--out_dir={run}', f'--hf={hf}'])
    ours = load_run(run).model
    x = torch.randint(0, ours.config.vocab_size, (1, 8))
    torch.testing.assert_close(load_gpt2(hf).eval()(x), ours(x))
    before = (hf / 'model.safetensors').stat().st_mtime_ns
    with pytest.raises(CheckpointError, match='already holds a Hugging Face model'):  # checked before --to is written
        checkpoint.main(['convert', f'--out_dir={run}', f'--hf={hf}', f'--to={tmp_path / "full"}'])
    assert (hf / 'model.safetensors').stat().st_mtime_ns == before and not (tmp_path / 'full').exists()
    with pytest.raises(CheckpointError, match='--to=DIR'):
        checkpoint.main(['convert', f'--out_dir={run}'])
    with pytest.raises(CheckpointError, match=f'write --out_dir={run}'):
        checkpoint.main(['convert', str(run), f'--to={tmp_path / "full"}'])
    assert not (tmp_path / 'full').exists()
    with pytest.raises(SystemExit) as e:
        checkpoint.main(['convert', '-h'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(f'--{k}' in out for k in checkpoint.CONVERT_DEFAULTS) and '# write a Hugging Face' in out


def test_run_folder_lock_refuses_a_second_run_and_takes_over_a_stale_lock(tmp_path, capsys):
    """One run per folder: a live holder (another process) is named with its pid and start time; a holder that
    was killed (-9: no clean-up) leaves a stale lock file, taken over with one message; release removes the lock
    file and the folders the lock made, when nothing else was written there."""
    run_dir = tmp_path / 'a' / 'run'
    code = (f"import checkpoint, sys; checkpoint.lock_run_folder({str(run_dir)!r}); print('locked', flush=True); "
            "sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(CheckpointError, match=rf"in use by another run: pid {holder.pid} on .*, started 20"):
            checkpoint.lock_run_folder(run_dir)
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / checkpoint.LOCK).is_file()  # killed: its lock file stays, its flock is gone
    checkpoint.lock_run_folder(run_dir)
    assert f"taking over the stale lock of pid {holder.pid}" in capsys.readouterr().err
    assert json.loads((run_dir / checkpoint.LOCK).read_text())['pid'] == os.getpid()
    checkpoint.release_run_folders()
    assert not (run_dir / checkpoint.LOCK).exists() and run_dir.is_dir()  # the killed holder made the folder
    fresh = tmp_path / 'b' / 'c'
    checkpoint.lock_run_folder(fresh)
    checkpoint.release_run_folders()
    assert not (tmp_path / 'b').exists()  # made by the lock and left empty: removed


_GROUPINGS = [dict(optimizer='adamw', decay_token_embedding=d) for d in (True, False)] + [
    dict(optimizer='coupled_adam', coupled_adam_embedding=e, decay_token_embedding=d)
    for e in ('output', 'input') for d in (True, False)]


@pytest.mark.parametrize('grouping', [
    pytest.param(dict(g, tie_embeddings=t), marks=[] if (g.get('coupled_adam_embedding'), g['decay_token_embedding'],
                                                        t) == ('input', False, False) else pytest.mark.slow)
    for g in _GROUPINGS for t in (False, True)], ids=lambda g: '-'.join(str(v) for v in g.values()))
def test_converted_dcp_checkpoint_has_the_full_runs_param_groups(tiny_dataset, tmp_path, grouping):
    """`checkpoint.py convert` of a sharded (dcp) run writes the optimizer the run trained with: its param groups
    (members, weight decay, coupled, lr, betas) and state equal those of the same run saved in the full format,
    for every optimizer and grouping key (convert once rebuilt the groups without decay_token_embedding and
    coupled_adam_embedding)."""
    kw = dict(grouping, max_iters=2, eval_interval=2, eval_iters=1, weight_decay=0.1)
    run_train(tmp_path / 'full', tiny_dataset.parent, dataset=tiny_dataset.name, **kw)
    run_train(tmp_path / 'dcp', tiny_dataset.parent, dataset=tiny_dataset.name, checkpoint_format='dcp', **kw)
    checkpoint.convert(tmp_path / 'dcp', to=tmp_path / 'conv')
    full = torch.load(tmp_path / 'full' / 'ckpt.pt', weights_only=True)['optimizer']
    conv = torch.load(tmp_path / 'conv' / 'ckpt.pt', weights_only=True)['optimizer']
    assert conv['param_groups'] == full['param_groups']
    assert {0.0, 0.1} <= {g['weight_decay'] for g in full['param_groups']}  # the grouping is not trivial
    assert conv['state'].keys() == full['state'].keys()
    for name, st in full['state'].items():
        assert all(torch.equal(torch.as_tensor(conv['state'][name][k]), torch.as_tensor(v))
                   for k, v in st.items()), name


def test_load_and_newest_intact_on_saved_checkpoints(tmp_path):
    """Quick (no train.py run): checkpoints written by save_checkpoint. load_checkpoint takes a folder (its
    ckpt.pt) or a file; a truncated ckpt.pt names the newest step file that loads, skipping the broken one it
    is a hard link of and a broken newer one; a dict without 'model'/'model_args' is refused."""
    for step in (1, 2, 3):
        checkpoint.save_checkpoint({'model': {'w': torch.full((2,), float(step))}, 'model_args': {}, 'step': step},
                                   tmp_path, step, keep_last_k=3)
    assert load_checkpoint(tmp_path)['step'] == 3 and load_checkpoint(tmp_path / 'ckpt_0000002.pt')['step'] == 2
    assert checkpoint.newest_intact(tmp_path) == (3, tmp_path / 'ckpt_0000003.pt')
    assert checkpoint.has_checkpoint(tmp_path) and not checkpoint.has_checkpoint(tmp_path / 'none')
    size = (tmp_path / 'ckpt.pt').stat().st_size
    with open(tmp_path / 'ckpt.pt', 'r+b') as f:  # ckpt.pt = ckpt_0000003.pt (a hard link): both break
        f.truncate(size // 2)
    assert checkpoint.newest_intact(tmp_path) == (2, tmp_path / 'ckpt_0000002.pt')
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'ckpt.pt'} is truncated or corrupt (")
    assert str(e.value).endswith(f"the newest intact checkpoint is {tmp_path / 'ckpt_0000002.pt'} (step 2): "
                                 f"`cp {tmp_path / 'ckpt_0000002.pt'} {tmp_path / 'ckpt.pt'}` and run again")
    # an intact ckpt.pt that is a hard link of a step file is not skipped by newest_intact's exclude
    assert checkpoint.newest_intact(tmp_path, exclude=tmp_path / 'ckpt_0000001.pt') == (2, tmp_path / 'ckpt_0000002.pt')
    assert checkpoint.newest_intact(tmp_path, exclude=tmp_path / 'ckpt_0000002.pt') == (1, tmp_path / 'ckpt_0000001.pt')
    torch.save({'model': {}, 'step': 4}, tmp_path / 'ckpt_0000004.pt')  # no model_args: not a train.py checkpoint
    with pytest.raises(CheckpointError, match=r"ckpt_0000004.pt is no train.py checkpoint \(it lacks 'model' and "
                                              r"'model_args'\)"):
        load_checkpoint(tmp_path / 'ckpt_0000004.pt')
    assert checkpoint.newest_intact(tmp_path) == (2, tmp_path / 'ckpt_0000002.pt')
    assert checkpoint.step_files(tmp_path / 'none') == {} and checkpoint.step_file(tmp_path, 12).name == \
        'ckpt_0000012.pt'


def test_write_json_text_and_a_failed_write(tmp_path):
    """Two-space indented JSON and a final newline; a write that cannot start (no such folder) is one
    CheckpointError with the OS reason and the fix, and leaves nothing behind."""
    checkpoint.write_json(tmp_path / 'a.json', {'x': 1, 'y': [2]})
    assert (tmp_path / 'a.json').read_text() == '{\n  "x": 1,\n  "y": [\n    2\n  ]\n}\n'
    with pytest.raises(CheckpointError) as e:
        checkpoint.write_json(tmp_path / 'none' / 'a.json', {'x': 1})
    assert str(e.value) == (f"cannot write a.json in {tmp_path / 'none'}: No such file or directory: check that "
                            f"the folder is writable (or use another --out_dir)")


def test_save_names_its_temporary_files_as_the_cleanup_finds_them(tmp_path, monkeypatch):
    """The temporary files of a save are ckpt_<step>.pt.tmp and ckpt.pt.tmp, the names the next save removes
    when a killed write left them (so stale ones never pile up); a save into a missing folder is one
    CheckpointError."""
    (tmp_path / 'ckpt_0000001.pt.tmp').write_bytes(b'partial')  # left by writes that were killed
    (tmp_path / 'ckpt.pt.tmp').write_bytes(b'partial')
    renames, real = [], os.replace
    monkeypatch.setattr(os, 'replace', lambda a, b: renames.append((Path(a).name, Path(b).name)) or real(a, b))
    checkpoint.save_checkpoint({'model': {}, 'model_args': {}, 'step': 2}, tmp_path, 2, keep_last_k=2)
    monkeypatch.undo()
    assert renames == [('ckpt_0000002.pt.tmp', 'ckpt_0000002.pt'), ('ckpt.pt.tmp', 'ckpt.pt')]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt', 'ckpt_0000002.pt']
    with pytest.raises(CheckpointError) as e:
        checkpoint.save_checkpoint({'model': {}, 'model_args': {}}, tmp_path / 'none', 3, keep_last_k=2)
    assert str(e.value).startswith(f"cannot write the step-3 checkpoint in {tmp_path / 'none'}: No such file or "
                                   f"directory")


def test_prune_removes_the_shards_of_a_pruned_step(tmp_path):
    for step in (1, 2):
        (tmp_path / f'ckpt_{step:07d}.pt').write_bytes(b'x')
        (checkpoint.dcp_dir(tmp_path, step) / 'shard').mkdir(parents=True)
    assert [p.name for p in checkpoint.prune(tmp_path, 2, keep_last_k=1)] == ['ckpt_0000001.pt']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt_0000002.dcp', 'ckpt_0000002.pt']


def test_load_of_a_sharded_checkpoint_and_a_file_that_is_not_a_dict(tmp_path, monkeypatch):
    """A sharded ckpt.pt (its 'dcp' names the shards' folder beside it) loads with dcp_path set when the shards
    are complete (.metadata), else names the shards in its message; every load is weights_only, onto
    map_location; a non-dict and a dict with extra keys are told apart."""
    checkpoint.save_checkpoint({'model': {}, 'model_args': {}, 'step': 4}, tmp_path, 4, keep_last_k=3)
    meta = {'model': {}, 'model_args': {}, 'step': 5, 'dcp': 'ckpt_0000005.dcp'}
    checkpoint.save_checkpoint(meta, tmp_path, 5, keep_last_k=3)
    shards = tmp_path / 'ckpt_0000005.dcp'
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    step4 = tmp_path / 'ckpt_0000004.pt'  # not ckpt_0000005.pt: that is ckpt.pt itself, loadable but shardless
    assert str(e.value) == (f"{tmp_path / 'ckpt.pt'} is a sharded checkpoint but its shards {shards} are missing or "
                            f"incomplete: the newest intact checkpoint is {step4} (step 4): `cp {step4} "
                            f"{tmp_path / 'ckpt.pt'}` and run again")
    shards.mkdir()
    (shards / '.metadata').write_bytes(b'')
    assert load_checkpoint(tmp_path)['dcp_path'] == str(shards)
    assert load_checkpoint(tmp_path / 'ckpt_0000005.pt')['dcp_path'] == str(shards)
    seen, real = [], torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: seen.append(k) or real(*a, **k))
    load_checkpoint(tmp_path / 'ckpt_0000005.pt', map_location='meta')
    checkpoint.newest_intact(tmp_path)
    monkeypatch.undo()
    assert seen == [{'map_location': 'meta', 'weights_only': True}, {'map_location': 'cpu', 'weights_only': True}]
    torch.save([1, 2], tmp_path / 'list.pt')
    with pytest.raises(CheckpointError, match="list.pt is no train.py checkpoint"):
        load_checkpoint(tmp_path / 'list.pt')
    torch.save({'model': {}, 'model_args': {}}, tmp_path / 'exact.pt')  # exactly the two keys: a checkpoint
    assert load_checkpoint(tmp_path / 'exact.pt') == {'model': {}, 'model_args': {}}


def test_read_errors_name_the_exception_and_its_first_line(tmp_path, monkeypatch):
    """A failed load names the exception type and the first line of its message (at most 120 characters; none
    for an empty message); with no intact step file left, the fix is a new run. has_checkpoint: ckpt.pt or
    any step file."""
    checkpoint.save_checkpoint({'model': {}, 'model_args': {}, 'step': 1}, tmp_path, 1, keep_last_k=1)
    assert checkpoint.has_checkpoint(tmp_path)
    (tmp_path / 'ckpt.pt').unlink()
    assert checkpoint.has_checkpoint(tmp_path)  # a step file alone is a checkpoint too
    for exc, shown in ((RuntimeError('x' * 200 + '\nsecond line'), 'x' * 120), (RuntimeError(), '')):
        monkeypatch.setattr(torch, 'load', lambda *a, exc=exc, **k: (_ for _ in ()).throw(exc))
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / 'ckpt_0000001.pt')
        assert str(e.value) == (f"{tmp_path / 'ckpt_0000001.pt'} is truncated or corrupt (RuntimeError: {shown}): "
                                f"no intact ckpt_<step>.pt is left in that folder: start a new run")
