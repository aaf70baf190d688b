"""sweep.py end to end with the real train.py on the shared tiny dataset (data.py's output): 2 learning rates x
2 variants = 4 real runs. Every number in results.csv is checked against the run folders train.py wrote
(metrics.jsonl, summary.json, config.json), and the losses against what training must do: start at ~ln V,
fall clearly at a usable learning rate, barely move at a tiny one. The printed learning-rate sensitivity is
recomputed from the CSV with the OEC paper's formula. A second invocation runs nothing."""
import csv
import json
import math

import pytest
from conftest import TINY_TRAIN, read_jsonl

import sweep

LRS = [1e-5, 3e-2]


@pytest.fixture(scope='module')
def swept(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('sweep')
    keys = dict(TINY_TRAIN, data_root=str(tiny_dataset.parent), dataset=tiny_dataset.name, max_iters=8,
                eval_interval=4, lr_decay_iters=8, min_lr=1e-6, warmup_iters=1)
    keys.pop('learning_rate')
    text = ''.join(f'{k} = {v!r}\n' for k, v in keys.items())
    text += f"sweep = dict(learning_rate={LRS!r})\nvariants = dict(baseline={{}}, z_loss=dict(z_loss=1e-2))\n"
    (tmp / 'tiny_sweep.py').write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        sweep.main(['tiny_sweep.py'])
    return tmp / 'sweeps' / 'tiny_sweep'


def _rows(sweep_dir):
    with open(sweep_dir / 'results.csv') as f:
        return {(float(r['learning_rate']), r['variant']): r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_results_csv_holds_the_runs_real_losses(swept):
    rows = _rows(swept)
    assert sorted(rows) == sorted((lr, v) for lr in LRS for v in ('baseline', 'z_loss'))
    at_init = {}
    for (lr, variant), row in rows.items():
        run = swept / row['run']
        evals = [r for r in read_jsonl(run / 'metrics.jsonl') if 'val_loss' in r]
        logs = [r for r in read_jsonl(run / 'metrics.jsonl') if 'loss' in r]
        summary = json.loads((run / 'summary.json').read_text())
        cfg = json.loads((run / 'config.json').read_text())
        assert cfg['learning_rate'] == lr and cfg['z_loss'] == (1e-2 if variant == 'z_loss' else 0.0)
        assert row['status'] == 'finished' and row['diverged'] == 'False'
        assert [e['step'] for e in evals] == [0, 4, 8] and [r['step'] for r in logs] == list(range(1, 9))
        assert float(row['final_val_loss']) == evals[-1]['val_loss'] == summary['final_val_loss']
        assert float(row['final_train_loss']) == evals[-1]['train_loss']
        assert float(row['best_val_loss']) == min(e['val_loss'] for e in evals)
        assert int(row['tokens']) == 8 * 4 * 32 == logs[-1]['tokens'] and int(row['step']) == 8
        assert float(row['mu_norm']) == evals[-1]['mu_norm'] and float(row['isotropy']) == evals[-1]['isotropy']
        assert float(row['loss_at_init']) == pytest.approx(math.log(512))
        assert abs(evals[0]['val_loss'] - math.log(512)) < 0.05  # N(0, 0.02) init: ~uniform over 512 tokens
        at_init[lr, variant] = evals[0]['val_loss']
        if variant == 'z_loss':  # its term is logged and part of the loss
            assert all(r['loss'] == pytest.approx(r['ce'] + 1e-2 * r['z_loss'], rel=1e-6) for r in logs)
    for variant in ('baseline', 'z_loss'):
        tiny, usable = float(rows[LRS[0], variant]['final_val_loss']), float(rows[LRS[1], variant]['final_val_loss'])
        assert abs(at_init[LRS[0], variant] - tiny) < 0.01  # lr 1e-5: 8 steps barely move the loss
        assert at_init[LRS[1], variant] - usable > 0.3 and usable < tiny - 0.3  # lr 3e-2: a real drop
    assert rows[LRS[1], 'baseline']['final_val_loss'] != rows[LRS[1], 'z_loss']['final_val_loss']


@pytest.mark.slow
def test_printed_lr_sensitivity_is_the_papers_formula_on_the_csv(swept, capsys):
    rows = _rows(swept)
    sweep.main([str(swept.parent.parent / 'tiny_sweep.py'), f'--sweep_dir={swept}', '--results_only'])
    out = capsys.readouterr().out
    l0 = math.log(512)
    for variant in ('baseline', 'z_loss'):
        losses = [float(rows[lr, variant]['final_val_loss']) for lr in LRS]
        lrs = sum(min(x, l0) - min(losses) for x in losses) / (len(losses) - 1)
        assert f"variant={variant}: LRS {lrs:.3f}" in out, out
        assert lrs > 0.3  # the two rates really differ


@pytest.mark.slow
def test_rerun_skips_finished_runs(swept, capsys, monkeypatch):
    before = {p: p.stat().st_mtime_ns for p in swept.glob('*/metrics.jsonl')}
    monkeypatch.chdir(swept.parent.parent)
    sweep.main(['tiny_sweep.py'])
    assert capsys.readouterr().out.count('already, skipped') == 4
    assert {p: p.stat().st_mtime_ns for p in swept.glob('*/metrics.jsonl')} == before


@pytest.mark.slow
def test_oec_mechanism_ordering_on_a_smaller_case(tiny_dataset, tmp_path, monkeypatch, capsys):
    """config/oec_mechanism.py, smaller (2 x 32 on the tiny dataset, 60 start steps + 30 per arm, no mu-loss arm):
    after the injected mean logit of 1000, in bf16 the baseline is worst, mu-centering equals the unshifted
    control, z-loss pulls mu.h_bar back and recovers from its spike; in fp32 the gauge-exact arms do not separate."""
    from conftest import ROOT
    (tmp_path / 'mech.py').write_text(
        "exec(open('config/oec_mechanism.py').read())\n"
        f"data_root = {str(tiny_dataset.parent)!r}\ndataset = {tiny_dataset.name!r}\n"
        "n_embd = 32\nblock_size = 32\nmax_iters = 90\nlr_decay_iters = 90\nwarmup_iters = 5\n"
        "eval_interval = 30\neval_iters = 4\nlog_interval = 10\n"
        "start_run = dict(max_iters=60, gauge_shift=0.0)\n"
        "variants = {k: v for k, v in variants.items() if k != 'mu_loss'}\n")
    monkeypatch.chdir(ROOT)  # the config execs config/oec_mechanism.py by its relative path
    sweep_dir = tmp_path / 'sw'
    sweep.main([str(tmp_path / 'mech.py'), f'--sweep_dir={sweep_dir}'])
    out = capsys.readouterr().out
    with open(sweep_dir / 'results.csv') as f:
        loss = {(r['dtype'], r['variant']): float(r['final_val_loss']) for r in csv.DictReader(f)}
    evals = {(d, v): [r for r in read_jsonl(sweep_dir / f'dtype={d},variant={v}' / 'metrics.jsonl') if 'val_loss' in r]
             for d, v in loss}
    bf, fp = 'bfloat16', 'float32'
    start = evals[bf, 'control'][-2]  # the start run's last eval (bf16), copied into every arm; then step 90
    assert start['step'] == 60 and abs(start['fhs_dot_prod']) < 20
    shifted = {d: evals[d, 'baseline'][-2] for d in (bf, fp)}  # a shifted arm evaluates right after the shift
    assert all(s['step'] == 60 and 700 < s['fhs_dot_prod'] < 1300 for s in shifted.values())
    assert shifted[fp]['val_loss'] == pytest.approx(start['val_loss'], abs=0.03)  # a gauge change (start: bf16 eval)
    assert shifted[bf]['val_loss'] > start['val_loss'] + 0.3  # bf16 rounds logits near 1000 in steps of 4-8
    # measured (2 x 32, 30 steps after the shift): control 4.137, baseline 5.087, mu-centering 4.138, z-loss 5.219
    assert loss[bf, 'baseline'] > max(loss[bf, 'control'], loss[bf, 'mu_centering']) + 0.5, loss  # stays hurt...
    assert loss[bf, 'mu_centering'] == pytest.approx(loss[bf, 'control'], abs=0.03), loss  # ...removed at once
    z = evals[bf, 'z_loss']  # its spike: the (log Z)^2 ~ 1e6 term's own gradient; 30 steps do not undo it all
    assert z[-1]['fhs_dot_prod'] < 100 and z[-1]['val_loss'] < z[-2]['val_loss'] - 0.1, z  # pulled back, recovering
    assert abs(evals[bf, 'mu_centering'][-1]['fhs_dot_prod']) < 1
    for v in ('baseline', 'mu_centering'):  # fp32: nothing but rounding separates them from the control
        assert loss[fp, v] == pytest.approx(loss[fp, 'control'], abs=0.02), (v, loss)
    assert 'fhs_dot_prod at step' in out and (sweep_dir / 'evals.png').is_file()
