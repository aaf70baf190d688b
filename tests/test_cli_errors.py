"""Bad input never ends in a traceback: every CLI (train, sample, sweep, data, checkpoint, clean, tokenizer, ner,
annotate, norms) prints one line `<program>: <problem>: <fix>` and exits non-zero. One table of bad inputs, each run
as its own process (forked, four at a time, from one that imported torch once; the script runs as __main__ as
`python X.py` does), asserting exit status != 0, no 'Traceback' on stderr, and the named key or file in the message.
Also: nothing was written (the working tree's data/ and out/ untouched)."""
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# (id, program and arguments, text the message must contain); {t} is the test's folder, {d} a dataset root
CASES = [
    # train.py: keys, ranges, contradictions, files
    ('train-unknown-key', 'train.py --learning_rat=0.1', 'learning_rate'),
    ('train-type', 'train.py --batch_size=0.5', 'batch_size'),
    ('train-min-lr', 'train.py --min_lr=0.1 --learning_rate=0.01', 'min_lr'),
    ('train-warmup', 'train.py --warmup_iters=-1', 'warmup_iters'),
    ('train-max-iters', 'train.py --max_iters=-5', 'max_iters'),
    ('train-beta1', 'train.py --beta1=1.0', 'beta1'),
    ('train-beta2', 'train.py --beta2=-0.1', 'beta2'),
    ('train-vocab-multiple', 'train.py --vocab_multiple=0', 'vocab_multiple'),
    ('train-compile-string', 'train.py --compile=false', 'compile=False'),
    ('train-dist-timeout', 'train.py --dist_timeout_s=0', 'dist_timeout_s'),
    ('train-decay-vs-schedule', 'train.py --decay_lr=False --schedule=cosine', 'decay_lr'),
    ('train-dtype', 'train.py --dtype=float16', 'dtype'),
    ('train-dropout', 'train.py --dropout=1.5', 'dropout'),
    ('train-norm', 'train.py --norm=batchnorm', 'norm'),
    ('train-heads', 'train.py --n_embd=30 --n_head=4', 'n_embd'),
    ('train-preset', 'train.py --model_preset=gpt5', 'model_preset'),
    ('train-resume-missing', 'train.py --init_from=resume --out_dir={t}/empty', 'ckpt.pt'),
    ('train-resume-corrupt', 'train.py --init_from=resume --out_dir={t}/corrupt', 'truncated or corrupt'),
    ('train-scratch-over-run', 'train.py --out_dir={t}/corrupt', '--init_from=resume'),
    ('train-syntax', 'train.py {t}/syntax.py', 'syntax.py:2'),
    ('train-config-raises', 'train.py {t}/raises.py', 'raises.py:1'),
    ('train-config-missing', 'train.py {t}/missing_config.py', 'missing_config.py'),
    ('train-ddp-no-torchrun', 'train.py --parallelism=ddp', 'parallelism'),
    ('train-finetune-args', 'train.py --init_from=finetune', 'finetune_from'),
    ('train-finetune-data-alone', 'train.py --finetune_data={t}/syntax.py', 'finetune_data'),
    ('train-finetune-missing-data', 'train.py --init_from=finetune --finetune_from={t}/corrupt '
     '--finetune_data={t}/nope.jsonl', 'nope.jsonl'),
    ('train-out-dir-file', 'train.py --out_dir={t}/syntax.py/run --data_root={d} --dataset=tiny', 'out_dir'),
    ('train-dataset-missing', 'train.py --dataset=nope --data_root={t}/data', 'nope'),
    ('train-bin-odd-bytes', 'train.py --data_root={t}/data --dataset=odd --out_dir={t}/o1', 'train.bin'),
    ('train-bin-length', 'train.py --data_root={t}/data --dataset=short --out_dir={t}/o2', 'meta.json'),
    ('train-hf-missing', 'train.py --init_from=gpt2-hf:{t}/empty --data_root={d} --dataset=tiny '
     '--out_dir={t}/o3', 'config.json'),
    ('train-bad-init', 'train.py --init_from=gpt2', 'init_from'),
    ('train-rope-fraction', 'train.py --pos=rope --rope_fraction=0.3', 'rope_fraction'),
    ('train-rope-theta', 'train.py --pos=rope --rope_theta=0', 'rope_theta'),
    ('train-hf-layout-missing', 'train.py --init_from=hf:{t}/empty --data_root={d} --dataset=tiny', 'config.json'),
    ('train-gauge-shift-nan', 'train.py --gauge_shift=nan', 'gauge_shift'),
    ('train-gauge-shift-tied', 'train.py --gauge_shift=10 --data_root={d} --dataset=tiny',
     'tie_embeddings=False'),
    # sample.py
    ('sample-temperature', 'sample.py --temperature=-1', 'temperature'),
    ('sample-top-k', 'sample.py --top_k=0', 'top_k'),
    ('sample-num-samples', 'sample.py --num_samples=0', 'num_samples'),
    ('sample-no-ckpt', 'sample.py --out_dir={t}/empty', 'ckpt.pt'),
    ('sample-corrupt', 'sample.py --out_dir={t}/corrupt', 'truncated or corrupt'),
    ('sample-prompt-file', 'sample.py --start=FILE:{t}/nope.txt', 'nope.txt'),
    ('sample-hf-needs-tokenizer', 'sample.py --hf_dir={t}/empty', '--tokenizer'),
    ('sample-hf-missing', 'sample.py --hf_dir={t}/empty --tokenizer=gpt2', 'config.json'),
    ('sample-unknown-key', 'sample.py --temprature=1', 'temperature'),
    # sweep.py
    ('sweep-missing-config', 'sweep.py {t}/missing_config.py', 'missing_config.py'),
    ('sweep-syntax', 'sweep.py {t}/syntax.py', 'syntax.py:2'),
    ('sweep-unknown-grid-key', 'sweep.py {t}/bad_sweep.py --dry_run', 'learning_rat'),
    ('sweep-unknown-key', 'sweep.py {t}/bad_sweep.py --dryrun', 'dry_run'),
    ('sweep-no-config', 'sweep.py --dry_run', 'config.py'),
    ('sweep-option-type', 'sweep.py {t}/bad_sweep.py --nproc_per_node=eight', 'nproc_per_node'),
    ('sweep-replicate-not-swept', 'sweep.py {t}/bad_replicate.py --dry_run', 'replicate'),
    ('sweep-paired-baseline-value', 'sweep.py {t}/bad_baseline.py --dry_run', 'paired_baseline'),
    # checkpoint.py
    ('checkpoint-positional-folder', 'checkpoint.py convert {t}/empty --to={t}/k1', '--out_dir='),
    ('checkpoint-no-target', 'checkpoint.py convert --out_dir={t}/corrupt', '--to=DIR'),
    ('checkpoint-corrupt', 'checkpoint.py convert --out_dir={t}/corrupt --to={t}/k2', 'truncated or corrupt'),
    ('checkpoint-missing', 'checkpoint.py convert --out_dir={t}/empty --hf={t}/k3', 'ckpt.pt'),
    ('checkpoint-unknown-key', 'checkpoint.py convert --outdir={t}/corrupt', 'out_dir'),
    ('norms-unknown-key', 'norms.py --outdir={t}/x', 'out'),
    # evaluation.py, lmeval.py
    ('evaluation-logits-dtype', 'evaluation.py --out_dir={t}/corrupt --logits_dtype=float16', 'logits_dtype'),
    ('evaluation-no-ckpt', 'evaluation.py --out_dir={t}/empty', 'ckpt.pt'),
    ('evaluation-hf-no-tokenizer', 'evaluation.py --hf_dir={t}/empty --datasets=tiny', '--tokenizer'),
    ('evaluation-dataset-missing', 'evaluation.py --hf_dir={t}/empty --tokenizer={d}/tiny/tokenizer.model '
     '--datasets=nope --data_root={d}', 'nope'),
    ('evaluation-unknown-key', 'evaluation.py --dataset=tiny', 'datasets'),
    ('lmeval-no-run', 'lmeval.py run --model nanogpt --model_args out_dir={t}/empty --tasks shakespeare_cloze '
     '--include_path evals', 'ckpt.pt'),
    # data.py
    ('data-no-command', 'data.py', 'prepare'),
    ('data-unknown-key', 'data.py prepare --vocab_sise=5', 'vocab_size'),
    ('data-input-missing', 'data.py prepare --dataset=mine --data_root={t}/data --input={t}/nope.txt', 'nope.txt'),
    ('data-syntax', 'data.py prepare {t}/syntax.py', 'syntax.py:2'),
    ('data-clean-moved', 'data.py clean --input={t}/nope.txt --out={t}/c1', 'clean.py'),
    ('data-bad-command', 'data.py prepar', 'prepare'),
    ('data-bad-type', 'data.py prepare --val_fraction=abc', 'val_fraction'),
    # clean.py
    ('clean-input-missing', 'clean.py --input={t}/nope.txt --out={t}/c2', 'nope.txt'),
    ('clean-type', 'clean.py --input={t}/text.txt --out={t}/c3 --min_chars=abc', 'min_chars'),
    ('clean-second-input-missing', 'clean.py --input={t}/text.txt,{t}/nope2.txt --out={t}/c4', 'nope2.txt'),
    # tokenizer.py
    ('tokenizer-input-missing', 'tokenizer.py train --input={t}/nope.txt --vocab_size=400 --out={t}/tk', 'nope.txt'),
    ('tokenizer-bad-command', 'tokenizer.py bogus', 'bogus'),
    ('tokenizer-unknown-key', 'tokenizer.py train --input={t}/text.txt --vocab_sise=400 --out={t}/tk2', 'vocab_size'),
    ('tokenizer-no-vocab-size', 'tokenizer.py train --input={t}/text.txt --out={t}/tk3', '--vocab_size'),
    ('tokenizer-spm-clash', 'tokenizer.py train --input={t}/text.txt --vocab_size=400 --out={t}/tk4 '
     "--spm_args={{'model_prefix':'x'}}", 'model_prefix'),
    ('tokenizer-eval-bad-pair', 'tokeval.py evaluate --tokenizer=gpt2 --data={t}/text.txt --out={t}/ev',
     'LANG=FILE'),
    ('tokenizer-prune-size', 'tokeval.py analyze --tokenizer=gpt2 --data=sv={t}/text.txt --prune_sizes=8x '
     '--out={t}/an', 'prune_sizes'),
    # ner.py
    ('ner-unknown-key', 'ner.py train --bogus=1', 'bogus'),
    ('ner-train-missing', 'ner.py train --train={t}/nope.conll --encoder={t}/empty --out_dir={t}/n1', 'nope.conll'),
    ('ner-backbone-missing', 'ner.py train --train={t}/a.conll --val={t}/a.conll --backbone=gpt:{t}/empty '
     '--out_dir={t}/n2', 'ckpt.pt'),
    ('ner-annotation-command', 'ner.py agreement --input=a.jsonl,b.jsonl', 'agreement.py agreement'),
    ('ner-bad-command', 'ner.py trian', 'train'),
    ('ner-no-command', 'ner.py', 'train|evaluate|predict'),
    ('tokenizer-no-command', 'tokenizer.py', 'train'),
    ('tokenizer-moved-command', 'tokenizer.py evaluate --tokenizer=gpt2', 'python tokeval.py evaluate'),
    ('tokeval-no-command', 'tokeval.py', 'evaluate|analyze'),
    ('annotate-no-command', 'annotate.py', 'convert'),
    ('annotate-moved-command', 'annotate.py merge --input=a.jsonl,b.jsonl', 'python agreement.py merge'),
    ('agreement-no-command', 'agreement.py', 'agreement|merge|resolve'),
    ('ner-predict-missing-model', 'ner.py predict --model={t}/empty --input={t}/text.txt --output={t}/p.jsonl',
     'ner_config.json'),
    # annotate.py
    ('annotate-missing-input', 'annotate.py convert --input={t}/nope.json --output={t}/out.jsonl --to=standard',
     'nope.json'),
    ('annotate-bad-command', 'annotate.py bogus', 'bogus'),
    ('annotate-bad-target', 'annotate.py convert --input={t}/doc.jsonl --output={t}/o.json --to=excel', 'excel'),
    ('annotate-text-not-str', 'annotate.py convert --input={t}/badtext.jsonl --output={t}/o.jsonl --to=standard',
     'badtext.jsonl'),
    ('annotate-one-file', 'agreement.py agreement --input={t}/doc.jsonl --out={t}/iaa', 'two or more'),
    ('annotate-resolve-missing', 'agreement.py resolve --merged={t}/doc.jsonl --out={t}/f.jsonl', '--resolved'),
    # one run per folder; a folder a run uses is never rebuilt under it; no output over its input
    ('train-empty-out-dir', 'train.py --out_dir=', '--out_dir is empty'),
    ('train-tokenizer-vs-prepared', 'train.py --data_root={t}/data --dataset=prepared --tokenizer=gpt2',
     '--rebuild_dataset=True'),
    ('data-recipe-vs-prepared', 'data.py prepare --data_root={t}/data --dataset=prepared --tokenizer=gpt2',
     '--dataset=prepared_gpt2'),
    ('ner-train-empty-out-dir', 'ner.py train --train={t}/a.conll --encoder={t}/empty --out_dir=', '--out_dir'),
    ('ner-train-over-a-run', 'ner.py train --train={t}/a.conll --encoder={t}/empty --out_dir={t}/nerrun',
     '--overwrite=True'),
    ('ner-predict-output-is-input', 'ner.py predict --model={t}/empty --input={t}/text.txt --output={t}/text.txt',
     '--output'),
    ('annotate-convert-output-is-input', 'annotate.py convert --input={t}/doc.jsonl --output={t}/doc.jsonl '
     '--to=standard', '--output'),
    ('annotate-merge-out-is-input', 'agreement.py merge --input={t}/doc.jsonl,{t}/doc2.jsonl --out={t}/doc2.jsonl '
     '--conflicts={t}/c.jsonl', '--out'),
    ('clean-out-inside-input', 'clean.py --input={t}/corpus --out={t}/corpus/clean', 'inside the input folder'),
    ('clean-out-inside-glob', 'clean.py --input={t}/corpus/*.txt --out={t}/corpus/c2', 'inside the input folder'),
    # wrong file kind
    ('ner-predict-conll', 'ner.py predict --model={t}/empty --input={t}/a.conll --output={t}/p2.jsonl', 'CoNLL'),
    ('annotate-same-file-twice', 'agreement.py agreement --input={t}/doc.jsonl,{t}/doc.jsonl --out={t}/iaa2',
     'given twice'),
    # every numeric key has a declared range (configurator), checked before any work
    ('data-val-fraction-negative', 'data.py prepare --dataset=vf --data_root={t}/data --input={t}/text.txt '
     '--val_fraction=-0.5', 'val_fraction=-0.5 is outside its range (0, 1)'),
    ('data-val-fraction-above-1', 'data.py prepare --dataset=vf --data_root={t}/data --input={t}/text.txt '
     '--val_fraction=1.5', 'val_fraction=1.5 is outside its range (0, 1)'),
    ('data-weight-negative', 'data.py prepare --dataset=vf --data_root={t}/data --input={t}/text.txt '
     "--weights={{'all':{{'all':-1}}}}", 'weights='),
    ('train-wsd-frac', 'train.py --wsd_decay_frac=1.5', 'wsd_decay_frac'),
    ('train-dataset-none', 'train.py {t}/dataset_none.py', "'dataset' expects str"),
    ('sample-seed', 'sample.py --seed=-1', 'seed=-1'),
    ('sweep-grid-range', 'sweep.py {t}/range_sweep.py --dry_run', 'learning_rate=-1.0'),
    ('clean-range', 'clean.py --input={t}/text.txt --out={t}/c5 --max_digit_fraction=2', 'max_digit_fraction'),
    ('tokenizer-range', 'tokenizer.py train --input={t}/text.txt --vocab_size=400 --out={t}/tk5 '
     '--character_coverage=0', 'character_coverage'),
    ('ner-val-split', 'ner.py train --train={t}/a.conll --val_split=1.5 --out_dir={t}/n3', 'val_split'),
    ('tokenizer-out-is-folder', 'tokenizer.py train --input={t}/text.txt --vocab_size=400 --out={t}/tkdir',
     'tkdir.model is a folder'),
    ('tokenizer-junk-model', 'tokeval.py evaluate --tokenizer={t}/junk.model --data=sv={t}/text.txt --out={t}/ev2',
     'junk.model is not a SentencePiece model'),
    ('data-junk-model', 'data.py prepare --dataset=jm --data_root={t}/data --input={t}/text.txt '
     '--tokenizer={t}/junk.model', 'junk.model is not a SentencePiece model'),
    ('train-nanogpt-ids-over-vocab', 'train.py --data_root={t}/data --dataset=nano', 'token id 99'),
    ('sample-ckpt-pt-missing', 'sample.py --out_dir={t}/stepfile', 'ckpt_0000002.pt (step 2) is intact'),
    ('ner-predict-batch', 'ner.py predict --model={t}/empty --input={t}/text.txt --output={t}/p2.jsonl '
     '--batch_size=0', 'batch_size'),
]


@pytest.fixture(scope='module')
def bad_inputs(tmp_path_factory, tiny_dataset, trained_run) -> tuple[Path, Path]:
    t = tmp_path_factory.mktemp('bad')
    (t / 'empty').mkdir()
    (t / 'corrupt').mkdir()
    (t / 'corrupt' / 'ckpt.pt').write_bytes(b'PK\x03\x04 not a checkpoint')
    (t / 'syntax.py').write_text("batch_size = 4\nlearning_rate = = 3\n")
    (t / 'raises.py').write_text("batch_size = undefined_name\n")
    (t / 'bad_sweep.py').write_text("sweep = dict(learning_rat=[1e-3, 1e-2])\n")
    (t / 'range_sweep.py').write_text("sweep = dict(learning_rate=[1e-3, -1.0])\n")
    (t / 'dataset_none.py').write_text("dataset = None\n")
    (t / 'tkdir.model').mkdir()
    (t / 'junk.model').write_bytes(b'not a SentencePiece model')
    (t / 'data' / 'nano').mkdir(parents=True)  # a nanoGPT folder whose ids exceed meta.pkl's vocab_size
    np.arange(100, dtype=np.uint16).repeat(50).tofile(t / 'data' / 'nano' / 'train.bin')
    np.arange(100, dtype=np.uint16).repeat(5).tofile(t / 'data' / 'nano' / 'val.bin')
    (t / 'data' / 'nano' / 'meta.pkl').write_bytes(pickle.dumps({'vocab_size': 65}))
    (t / 'stepfile').mkdir()  # a run folder whose ckpt.pt is gone but ckpt_0000002.pt is intact
    shutil.copy(trained_run / 'ckpt.pt', t / 'stepfile' / 'ckpt_0000002.pt')
    (t / 'bad_replicate.py').write_text("replicate = 'seed'\nsweep = dict(learning_rate=[1e-3, 1e-2])\n")
    (t / 'bad_baseline.py').write_text("paired_baseline = dict(variant='base')\nvariants = dict(baseline={})\n")
    (t / 'text.txt').write_text("A line of text that is long enough.\n")
    (t / 'a.conll').write_text("Anna B-PER\nlives O\n\n")
    (t / 'doc.jsonl').write_text('{"id": "1", "text": "Anna bor i Lund.", "tags": []}\n')
    (t / 'badtext.jsonl').write_text('{"id": "1", "text": 7, "tags": []}\n')
    (t / 'doc2.jsonl').write_text('{"id": "1", "text": "Anna bor i Lund.", "tags": []}\n')
    (t / 'corpus').mkdir()
    (t / 'corpus' / 'sv.txt').write_text("En rad med text som är lång nog för att behållas av filtren här.\n")
    (t / 'nerrun' / 'model').mkdir(parents=True)  # an earlier ner.py train run
    (t / 'nerrun' / 'report.json').write_text('{}')
    shutil.copytree(tiny_dataset, t / 'data' / 'prepared')  # a prepared folder (own BPE) runs may use
    for name, cut in (('odd', 1), ('short', 2)):  # a truncated file, then one token short of meta.json
        shutil.copytree(tiny_dataset, t / 'data' / name)
        train_bin = t / 'data' / name / 'train.bin'
        train_bin.write_bytes(train_bin.read_bytes()[:-cut])
    return t, tiny_dataset.parent


def _argv(name: str, cmd: str, t: Path, d: Path) -> list[str]:
    """train.py cases get their own data_root and out_dir unless they name one: a check that failed to stop
    would write there (asserted empty below), never into the working tree."""
    if cmd.startswith('train.py'):
        cmd += f" --data_root={t}/nodata" * ('--data_root' not in cmd) + f" --out_dir={t}/o-{name}" * (
            '--out_dir' not in cmd)
    return cmd.format(t=t, d=d).split()


# Runs every row as its own process: forked from one that imported torch once (no torch work, so no threads),
# the script run as __main__ like `python X.py` (an uncaught exception prints its traceback and exits 1, atexit
# handlers run). argv: a JSON list of [argv, stdout file, stderr file]; prints one exit status per row.
_FORK_RUNNER = """
import json, os, runpy, sys
import numpy, sentencepiece, tiktoken, torch  # what most scripts import: loaded once, shared by every fork
rows, running, status = json.loads(sys.argv[1]), {}, {}
for i, (argv, out, err) in enumerate(rows):
    if len(running) == 4:
        pid, code = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
        sys.exit(0)
    running[pid] = i
while running:
    pid, code = os.wait()
    status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
print(json.dumps([status[i] for i in range(len(rows))]))
"""


def _run_all(argvs: list[list[str]], folder: Path) -> list[subprocess.CompletedProcess]:
    """Each argv run from the repository root as its own process; (returncode, stdout, stderr) per row."""
    rows = [[argv, str(folder / f"{i}.out"), str(folder / f"{i}.err")] for i, argv in enumerate(argvs)]
    p = subprocess.run([sys.executable, "-c", _FORK_RUNNER, json.dumps(rows)], cwd=ROOT, capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    codes = json.loads(p.stdout.splitlines()[-1])
    return [subprocess.CompletedProcess(argv, code, Path(out).read_text(errors="replace"),
                                        Path(err).read_text(errors="replace"))
            for (argv, out, err), code in zip(rows, codes)]


def _tree(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob('*')} if folder.exists() else {}


@pytest.mark.slow
def test_bad_input_gives_one_line_and_no_traceback(bad_inputs):
    t, d = bad_inputs
    assert len(CASES) >= 40 and {c[1].split()[0] for c in CASES} == {
        'train.py', 'sample.py', 'sweep.py', 'data.py', 'clean.py', 'tokenizer.py', 'tokeval.py', 'ner.py',
        'annotate.py', 'agreement.py', 'checkpoint.py', 'norms.py', 'evaluation.py', 'lmeval.py'}
    before = {p: _tree(ROOT / p) for p in ('data', 'out')}
    argvs = [_argv(name, cmd, t, d) for name, cmd, _ in CASES]
    logs = t.parent / (t.name + '-logs')  # beside the test folder: nothing new inside it (asserted below)
    logs.mkdir(exist_ok=True)
    results = _run_all(argvs, logs)
    problems = []
    for (name, _, expected), r in zip(CASES, results):
        if r.returncode == 0 or 'Traceback' in r.stderr or expected not in r.stderr:
            problems.append(f"{name}: exit {r.returncode}, stderr:\n{r.stderr[-1500:]}")
    assert not problems, '\n\n'.join(problems)
    assert {p: _tree(ROOT / p) for p in ('data', 'out')} == before  # nothing written in the working tree
    assert not [p.name for p in t.iterdir() if p.name.startswith(('o-', 'o1', 'o2', 'o3', 'nodata'))]
    assert json.loads((t / 'data' / 'odd' / 'meta.json').read_text())['recipe']  # the bad folders stay as they were
    assert json.loads((t / 'data' / 'prepared' / 'meta.json').read_text())['tokenizer'] != 'gpt2'  # not rebuilt
    assert sorted(p.name for p in (t / 'corpus').iterdir()) == ['sv.txt']  # no output inside the input
    assert sorted(p.name for p in (t / 'nerrun').iterdir()) == ['model', 'report.json']
    assert (t / 'doc2.jsonl').read_text() == (t / 'doc.jsonl').read_text() and (t / 'text.txt').read_text()
