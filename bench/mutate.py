"""
Mutation testing of the critical functions with mutmut 3 (not in CI: minutes to hours per module on a CPU).

    python bench/mutate.py --targets=losses,optim,norms         # the three numerical cores, one after another
    python bench/mutate.py --targets=nertags --max_children=2    # more workers on a quiet machine
    python bench/mutate.py --targets=sampling --time_box_s=720   # stop after 12 min; the rest is "not checked"
    python bench/mutate.py --list                                # the targets, their functions and tests

For each target, a throw-away copy of the repository is made under --work (default /tmp/mutate), its
pyproject.toml gets a [tool.mutmut] section naming the one source file and the tests that exercise it, and
`mutmut run` mutates only the listed functions (each mutant runs only the tests that call the function).
Prints, per file, the mutants, killed, survived, timeouts and no-test mutants, and writes every survivor's diff
to <work>/<target>/survivors.txt. mutmut's CPU-time "timeouts" are re-run directly (their tests, stopping at the
first failure) so that a loaded machine does not hide a survivor. The repository itself is never touched.
Re-summarise a finished run without mutating again: --summary_only.

The training step (train.py's loop: loss/gradient accumulation, the finite check, the stop flag) is module-level
script code, which mutmut cannot mutate (it mutates functions): it is checked by hand-made mutants instead,
listed in tests/README.md.
"""
import fnmatch
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# target: (source file, mutmut name patterns of the critical functions, tests that check them)
TARGETS = {
    'losses': ('losses.py', ['losses.*'], ['tests/test_losses.py']),
    'optim': ('optim.py', ['optim.*'], ['tests/test_optim.py']),
    'norms': ('norms.py', ['norms.*'], ['tests/test_norms.py']),
    'sampling': ('model.py', ['model.xǁGPTǁgenerate*'], ['tests/test_sample.py', 'tests/test_model.py']),
    # NER entity extraction and scores (tags -> entities, scheme conversion, seqeval-equal metrics)
    'nertags': ('nertags.py', ['nertags.x_split_tag*', 'nertags.x_to_bio*', 'nertags.x_bio_to_bilou*',
                               'nertags.x_convert*', 'nertags.x_entities*', 'nertags.x__prefix_type*',
                               'nertags.x_strict_entities*', 'nertags.x_lenient_entities*', 'nertags.x__prf*',
                               'nertags.x__scores*', 'nertags.x_entity_scores*', 'nertags.x__plain*',
                               'nertags.x_token_scores*'],
                ['tests/test_nertags.py', 'tests/test_ner.py', 'tests/test_nertagger.py']),
    # NER tagging: words -> chunks -> per-word probabilities -> tags -> character spans
    'nertagger': ('nertagger.py', ['nertagger.x_encode*', 'nertagger.x_collate*', 'nertagger.x_word_probs*',
                                   'nertagger.xǁTaggerǁtag*', 'nertagger.x_predict__*'],
                  ['tests/test_nertagger.py', 'tests/test_nertagger.py', 'tests/test_ner.py']),
    'agreement': ('agreement.py', ['agreement.x__labels_at*', 'agreement.x_aligned_units*',
                                   'agreement.x_cohen_kappa*', 'agreement.x_fleiss_kappa*',
                                   'agreement.x__span_counts*', 'agreement.x__f1s*', 'agreement.x__mean*',
                                   'agreement.x__scores*', 'agreement.x_agreement__*'],
                  ['tests/test_agreement.py', 'tests/test_annotate.py']),
    'tokenizer': ('tokeval.py', ['tokeval.x__word_initial*', 'tokeval.x_evaluation_metrics*'],
                  ['tests/test_tokeval.py', 'tests/test_tokenizer.py']),
    # the data loaders' order and resume state
    'loaders': ('loader.py', ['loader.x_epoch_permutation*', 'loader.xǁStreamǁ*', 'loader.x__windows*',
                              'loader.xǁSequentialLoaderǁ*'], ['tests/test_loader.py', 'tests/test_data.py']),
    'chat': ('chat.py', ['chat.xǁChatLoaderǁ*'], ['tests/test_chat.py', 'tests/test_data.py']),
    # the files the first mutation runs left out: the eval loss, checkpoints, readers, dedup, sweeps, MFU
    # evaluation: test_train.py's quick tests run train.py in subprocesses (minutes per mutant): its own tests only
    'evaluation': ('evaluation.py', ['evaluation.*'], ['tests/test_evaluation.py']),
    # checkpoint: the tests without a train.py run (a run per mutant takes minutes on 2 cores)
    'checkpoint': ('checkpoint.py', ['checkpoint.*'], [
        'tests/test_checkpoint.py::' + t for t in (
            'test_prune_keeps_newest_by_step_and_only_our_files', 'test_save_is_atomic_and_prunes',
            'test_ckpt_pt_is_complete_at_every_moment_of_a_save',
            'test_full_disk_gives_one_message_and_removes_the_partial_file',
            'test_a_pickled_object_is_refused_without_advising_weights_only_false', 'test_missing_checkpoint',
            'test_write_json_is_atomic', 'test_load_and_newest_intact_on_saved_checkpoints',
            'test_write_json_text_and_a_failed_write', 'test_save_names_its_temporary_files_as_the_cleanup_finds_them',
            'test_prune_removes_the_shards_of_a_pruned_step',
            'test_load_of_a_sharded_checkpoint_and_a_file_that_is_not_a_dict',
            'test_read_errors_name_the_exception_and_its_first_line')]),
    # documents: its own tests and the line-ending ones (test_data.py prepares datasets in worker processes)
    'documents': ('documents.py', ['documents.*'], ['tests/test_documents.py', 'tests/test_line_endings.py']),
    'dedup': ('dedup.py', ['dedup.*'], ['tests/test_dedup.py', 'tests/test_clean.py']),
    # results: the sweep's results (collect, summary, LRS, norm metrics), with its own tests (results.py was split
    # off sweep.py after the mutation run recorded in tests/README.md)
    'results': ('results.py', ['results.*'], ['tests/test_results.py']),
    # mfu: its own tests and test_model's MFU tests (test_parallel's run train.py under torchrun)
    'mfu': ('mfu.py', ['mfu.*'], ['tests/test_mfu.py', 'tests/test_model.py::test_num_params_and_flops',
                                  'tests/test_model.py::test_gpu_peak_flops_per_device_name',
                                  'tests/test_model.py::test_mfu_never_exceeds_one']),
    # nerreaders: the reader tests (test_ner.py fine-tunes taggers: minutes per mutant)
    'nerreaders': ('nerdata.py', ['nerdata.*'], ['tests/test_nerdata.py', 'tests/test_line_endings.py'] + [
        'tests/test_ner.py::' + t for t in (  # the checks that read files but train nothing (once test_ner_checks.py)
            'test_empty_validation_split_stops_before_training',
            'test_stray_inside_tags_are_counted_with_file_line_and_repaired_on_request',
            'test_max_seq_length_beyond_the_position_table_is_an_error_at_start',
            'test_data_warnings_are_printed_before_training_and_wordless_labels_counted',
            'test_predict_writes_one_record_per_input_line')]),
}
# train.py's loop is module-level code that mutmut cannot reach: hand-written one-line mutants, each a silently wrong
# number (not a crash), run against the quick tests of the loop (--train_loop=True). (name, original, mutant)
TRAIN_MUTANTS = [
    ('lr one step ahead', "lr = lr_at(iter_num, config)", "lr = lr_at(iter_num + 1, config)"),
    ('lr set on the first group only', "for group in opt.param_groups:\n        group['lr'] = lr",
     "for group in opt.param_groups[:1]:\n        group['lr'] = lr"),
    ('logged lr is the next step\'s', "loss=vals['loss'], lr=lr,", "loss=vals['loss'], lr=lr_at(iter_num, config),"),
    ('micro-step weight without world_size', "weight = trained[micro_step] * world_size / n_global",
     "weight = trained[micro_step] / n_global"),
    ('micro-step weight 1 (sum, not mean)', "(loss * weight).backward()", "loss.backward()"),
    ('logged loss not averaged over ranks', "stats = torch.cat([stats / world_size,", "stats = torch.cat([stats,"),
    ('tokens not restored on resume', "iter_num, tokens_seen = pre_ckpt['step'], pre_ckpt['tokens']",
     "iter_num, tokens_seen = pre_ckpt['step'], 0"),
    ('skipped steps not restored', "best_val_loss, nonfinite_skipped = pre_ckpt['best_val_loss'], "
     "pre_ckpt['nonfinite_skipped']", "best_val_loss, nonfinite_skipped = pre_ckpt['best_val_loss'], 0"),
    ('best val loss not restored', "best_val_loss, nonfinite_skipped = pre_ckpt['best_val_loss'], ",
     "best_val_loss, nonfinite_skipped = float('inf'), "),
    ('loader position not restored', "loader.load_state_dict(pre_ckpt['loader'])", "pass"),
    ('dropout RNG not restored', "checkpoint.set_rng_state(pre_ckpt['rng'][rank])", "torch.manual_seed(seed + rank)"),
    ('tokens counted per step, not summed', "tokens_seen += real_tokens", "tokens_seen = real_tokens"),
    ('skipped count forgets the resumed ones', "nonfinite_skipped = skipped_before + int(vals['skipped'])",
     "nonfinite_skipped = int(vals['skipped'])"),
    ('always_save_checkpoint ignored', "if iter_num > start_iter and (improved or always_save_checkpoint):",
     "if iter_num > start_iter and improved:"),
    ('per-language loss on the main val split', "rec[f'val_loss/{lang}'], _ = loss(windows(lang_data))",
     "rec[f'val_loss/{lang}'], _ = loss(windows(val_data))"),
    ('bits per byte times ln 2', "/ math.log(2) * tokens_per_byte", "* math.log(2) * tokens_per_byte"),
    ('eval windows change with the step', "block_size=block_size, seed=seed + 7,",
     "block_size=block_size, seed=seed + 7 + iter_num,"),
    ('no final eval off the interval', "if (iter_num % eval_interval == 0 or iter_num >= max_iters or eval_only",
     "if (iter_num % eval_interval == 0 or eval_only"),
    ('mu-centering also on a skipped step', "optim.mu_centering_where_(raw_model.output_embedding(), step_ok)",
     "optim.mu_centering_where_(raw_model.output_embedding(), torch.ones((), dtype=torch.bool))"),
    ('clip at 0 when grad_clip=0', "grad_clip if grad_clip > 0 else float('inf')",
     "grad_clip if grad_clip >= 0 else float('inf')"),
    ('decay_lr=False ignored', "    config['schedule'] = 'constant'  # nanoGPT's decay_lr=False",
     "    pass  # nanoGPT's decay_lr=False"),
]
TRAIN_LOOP_TESTS = ['tests/test_train.py', 'tests/test_evaluation.py']  # their quick tests (-m "not slow")

STATUS = {1: 'killed', 3: 'killed', 0: 'survived', 5: 'no tests', 33: 'no tests', 34: 'skipped',
          35: 'suspicious', 36: 'timeout', 24: 'timeout', -24: 'timeout', 152: 'timeout', 255: 'timeout',
          37: 'caught by type check', -11: 'killed', -9: 'killed', None: 'not checked'}


def copy_repo(repo: Path) -> Path:
    """A fresh copy of the tracked (and untracked, not ignored) files of this repository at `repo`."""
    shutil.rmtree(repo, ignore_errors=True)
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (repo / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, repo / f)
    return repo


def prepare(target: str, work: Path) -> Path:
    """A copy of the tracked files (the data in corpora/ included) plus a [tool.mutmut] section."""
    src, _, tests = TARGETS[target]
    shutil.rmtree(work / target, ignore_errors=True)
    repo = copy_repo(work / target / 'repo')
    (repo / src).write_text(undecorate_no_grad((repo / src).read_text()))
    others = sorted(p.name for p in repo.glob('*.py') if p.name != src)
    section = '\n[tool.mutmut]\n' + '\n'.join([
        f'source_paths = {json.dumps([src])}',
        f'also_copy = {json.dumps(others + ["config/", "examples/", "corpora/"])}',  # tests read corpora/
        f'pytest_add_cli_args_test_selection = {json.dumps(tests)}',
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-m", "not slow"]',  # slow = subprocess runs
        'process_isolation = "fork"',  # OMP_NUM_THREADS=1: no thread pool to break; forkserver ran into CPU limits
        'use_git_change_detection = false',
        'timeout_multiplier = 5.0',
    ]) + '\n'
    with open(repo / 'pyproject.toml', 'a') as f:
        f.write(section)
    return repo


def undecorate_no_grad(code: str) -> str:
    """mutmut 3 skips decorated functions (only @staticmethod/@classmethod are mutated), which would leave
    GPT.generate, word_probs and CoupledAdam.step unmutated. In the throw-away copy, `@torch.no_grad()` on a
    function becomes `with torch.no_grad():` around its body: the same behaviour, now mutable."""
    lines, out, i = code.split('\n'), [], 0
    while i < len(lines):
        if lines[i].strip() != '@torch.no_grad()':
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        i += 1
        depth = 0
        while True:  # the signature, possibly over several lines
            depth += lines[i].count('(') - lines[i].count(')')
            out.append(lines[i])
            i += 1
            if depth == 0 and lines[i - 1].rstrip().endswith(':'):
                break
        if lines[i].strip().startswith('"""'):  # the docstring stays the docstring (not a mutable string)
            closed = lines[i].strip().endswith('"""') and len(lines[i].strip()) > 3
            out.append(lines[i])
            i += 1
            while not closed:
                closed = '"""' in lines[i]
                out.append(lines[i])
                i += 1
        out.append(indent + '    with torch.no_grad():')
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(indent + ' ')):
            out.append('    ' + lines[i] if lines[i].strip() else lines[i])
            i += 1
    return '\n'.join(out)


# one process re-checks many mutants: mutmut's trampolines read MUTANT_UNDER_TEST at every call
_RECHECK_WORKER = """
import contextlib, os, sys, pytest
out = sys.stdout
for line in sys.stdin:
    name, *tests = line.split('\\t')
    os.environ['MUTANT_UNDER_TEST'] = name
    with open(os.devnull, 'w') as null, contextlib.redirect_stdout(null):  # a hang after '...' (no newline)
        code = pytest.main(['-x', '-q', '-p', 'no:cacheprovider', '-o', 'addopts=', *[t.strip() for t in tests]])
    print('RECHECK', name, int(code), file=out, flush=True)  # would block the parent's readline() forever
"""


def recheck(names: list[str], repo: Path, limit_s: float) -> dict[str, int | None]:
    """mutmut's 'timeout' is a CPU-time budget from the clean run's test durations; on a loaded machine
    mutants whose tests fail land there too. Run each one's covering tests again (stopping at the first
    failure) in one worker process: 1 = killed, 0 = survived, None = still running after limit_s (a hang)."""
    stats = json.loads((repo / 'mutants' / 'mutmut-stats.json').read_text())['tests_by_mangled_function_name']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out, todo, worker = {}, list(names), None
    while todo:
        if worker is None:
            worker = subprocess.Popen([sys.executable, '-c', _RECHECK_WORKER], cwd=repo / 'mutants', env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        name = todo.pop(0)
        tests = sorted(stats.get(name.rsplit('__mutmut_', 1)[0], []))
        if not tests:
            out[name] = 5
            continue
        worker.stdin.write('\t'.join([name, *tests]) + '\n')
        worker.stdin.flush()
        deadline, code = time.time() + limit_s, None
        while time.time() < deadline:
            ready, _, _ = select.select([worker.stdout], [], [], max(0.0, deadline - time.time()))
            line = worker.stdout.readline() if ready else ''
            if ready and not line:  # the worker died (e.g. the mutant crashed the interpreter): killed
                code = 1
                break
            if line.startswith('RECHECK ' + name + ' '):
                code = int(line.split()[-1])
                break
        if code is None or (ready and not line):
            worker.kill()
            worker.wait()
            worker = None
        out[name] = None if code is None else (0 if code == 0 else 5 if code == 5 else 1)
    if worker is not None:
        worker.stdin.close()
        worker.wait()
    return out


def summarize(target: str, repo: Path, limit_s: float) -> dict:
    """Counts per status from mutmut's .meta files (timeouts re-checked directly), survivors' diffs."""
    src, patterns, _ = TARGETS[target]
    meta = json.loads((repo / 'mutants' / (src + '.meta')).read_text())
    # the .meta file lists every mutant of the file: keep those of the critical functions
    codes = {n: c for n, c in meta['exit_code_by_key'].items() if any(fnmatch.fnmatch(n, p) for p in patterns)}
    again = recheck([n for n, c in codes.items() if STATUS.get(c) == 'timeout'], repo, limit_s)
    codes.update({n: 36 if c is None else c for n, c in again.items()})
    counts = {}
    for code in codes.values():
        counts[STATUS.get(code, f'exit {code}')] = counts.get(STATUS.get(code, f'exit {code}'), 0) + 1
    per_function = {}
    for name, code in codes.items():
        row = per_function.setdefault(name.rsplit('__mutmut_', 1)[0], {})
        row[STATUS.get(code, f'exit {code}')] = row.get(STATUS.get(code, f'exit {code}'), 0) + 1
    survivors = sorted(k for k, c in codes.items() if STATUS.get(c) in ('survived', 'no tests', 'timeout'))
    diffs = []
    for name in survivors:
        show = subprocess.run(['mutmut', 'show', name], cwd=repo, capture_output=True, text=True)
        diffs.append(f'# {STATUS.get(codes[name])}\n{show.stdout}')
    (repo.parent / 'survivors.txt').write_text('\n'.join(diffs))
    return dict(file=src, mutants=len(codes), **counts, survivors=survivors, per_function=per_function)


MUTATE_DEFAULTS = dict(
    targets=[],  # targets to mutate, comma-separated (python bench/mutate.py --list shows them)
    work='/tmp/mutate',  # scratch folder for the copies
    max_children=1,  # parallel mutant workers
    recheck_s=120.0,  # wall-clock limit per re-checked timeout
    time_box_s=0.0,  # stop mutmut after this many seconds per target (0: no limit); the rest is "not checked"
    only=[],  # a subset of the target's function patterns to run, comma-separated (e.g. what a time box left)
    list=False,  # show the targets and exit
    train_loop=False,  # also run the hand-written mutants of train.py's loop (TRAIN_MUTANTS) against its quick tests
    summary_only=False,  # summarise the last run in --work again
)


def train_loop_mutants(work: Path, env: dict) -> list[dict]:
    """Apply each TRAIN_MUTANTS entry to a copy of train.py and run the loop's quick tests (stop at the first
    failure): killed = a test failed. Prints one line per mutant; returns the rows."""
    repo = copy_repo(work / 'train' / 'repo')
    original = (repo / 'train.py').read_text()
    rows = []
    for name, old, new in TRAIN_MUTANTS:
        if original.count(old) != 1:
            rows.append(dict(mutant=name, status=f'not applied ({original.count(old)} matches)'))
        else:
            (repo / 'train.py').write_text(original.replace(old, new))
            t0 = time.time()
            r = subprocess.run([sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', '-m',
                                'not slow', *TRAIN_LOOP_TESTS], cwd=repo, env=env, capture_output=True, text=True)
            failed = [line.split(' ')[1] for line in r.stdout.splitlines() if line.startswith('FAILED ')]
            rows.append(dict(mutant=name, status='killed' if r.returncode == 1 else
                             'survived' if r.returncode == 0 else f'error (exit {r.returncode})',
                             by=failed[:1], seconds=round(time.time() - t0)))
        print(json.dumps(rows[-1]), flush=True)
    (repo / 'train.py').write_text(original)
    return rows


def main(argv: list[str]) -> None:
    from configurator import configure
    args = configure(dict(MUTATE_DEFAULTS), argv, source=__file__)
    if args['train_loop']:
        rows = train_loop_mutants(Path(args['work']), dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1'))
        print(f"train.py loop: {len(rows)} mutants, {sum(r['status'] == 'killed' for r in rows)} killed")
        if not args['targets']:
            return
    if args['list'] or not args['targets']:
        for t, (src, pats, tests) in TARGETS.items():
            print(f"{t:<10} {src:<13} {' '.join(pats)}  <- {' '.join(tests)}")
        return
    unknown = [t for t in args['targets'] if t not in TARGETS]
    if unknown:
        sys.exit(f"unknown target(s) {unknown}: use any of {', '.join(TARGETS)}")
    if shutil.which('mutmut') is None:
        sys.exit("mutmut not found: pip install -r requirements-dev.txt")
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    for target in args['targets']:
        repo = Path(args['work']) / target / 'repo'
        if args['only']:  # the summary then counts these functions only
            TARGETS[target] = (TARGETS[target][0], list(args['only']), TARGETS[target][2])
        if args['summary_only']:
            print(json.dumps(summarize(target, repo, args['recheck_s'])))
            continue
        repo = prepare(target, Path(args['work']))
        cmd = ['mutmut', 'run', f"--max-children={args['max_children']}", *TARGETS[target][1]]
        print(f"== {target}: {' '.join(cmd)} (in {repo})", flush=True)
        with open(repo.parent / 'mutmut.log', 'w') as log:
            proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=args['time_box_s'] or None)
            except subprocess.TimeoutExpired:  # results so far are in the .meta files (saved per mutant)
                print(f"{target}: time box of {args['time_box_s']:.0f} s reached, stopping mutmut", flush=True)
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        try:
            result = summarize(target, repo, args['recheck_s'])
        except FileNotFoundError:
            print(f"{target}: mutmut produced no results; see {repo.parent / 'mutmut.log'}")
            continue
        (repo.parent / 'summary.json').write_text(json.dumps(result, indent=2))
        counts = ', '.join(f'{k} {v}' for k, v in result.items() if k not in ('file', 'survivors', 'per_function'))
        print(f"{target}: {counts}; survivors' diffs in {repo.parent / 'survivors.txt'}", flush=True)


if __name__ == '__main__':
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
