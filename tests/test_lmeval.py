"""lmeval.py, the lm-eval adapter over our GPT, offline on the repository's own tasks (evals/*.yaml: Shakespeare
cloze = multiple choice, sonnets = perplexity, continuation = generation).

Cross-check: on the trained_run fixture (GPT-2 layout) our adapter and lm-eval's own HF model
(lm_eval.models.huggingface.HFLM) on the folder `checkpoint.py convert --hf` exports give the same
log-likelihoods, the same accuracy and perplexities, and the same generations. HFLM gets a transformers
GPTSw3Tokenizer over the run's SentencePiece model (the ids of our Tokenizer, checked here), and EOT as the
prefix of an empty context, as our data has it.
Every architecture (DyT, DyISRU, RMSNorm, RoPE, SwiGLU, qk-norm, GQA, untied, soft-capping): the adapter's
scores equal an independent forward of the model, one request at a time, with torch.nn.functional."""
import json
import os
import subprocess
import sys

for _key in ('HF_DATASETS_OFFLINE', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'):  # before datasets is imported
    os.environ.setdefault(_key, '1')

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import ROOT  # noqa: E402

lm_eval = pytest.importorskip('lm_eval')
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import checkpoint  # noqa: E402
import lmeval  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

TASKS = ['shakespeare_cloze', 'shakespeare_ppl', 'shakespeare_continue']


def _evaluate(model, monkeypatch, **kw) -> dict:
    monkeypatch.chdir(ROOT)  # the tasks' data_files are relative to the repository root
    return lm_eval.simple_evaluate(model=model, tasks=TASKS, task_manager=TaskManager(include_path=str(ROOT / 'evals')),
                                   log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                   fewshot_random_seed=0, **kw)


def _responses(out: dict) -> dict:
    """(task, doc id) -> the model's raw responses to that document's requests."""
    return {(task, s['doc_id']): s['resps'] for task, samples in out['samples'].items() for s in samples}


@pytest.mark.slow
def test_same_scores_as_lm_evals_hf_model_on_the_exported_folder(trained_run, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer
    hf_dir = tmp_path / 'hf'
    checkpoint.convert(trained_run, hf=hf_dir)
    run = checkpoint.load_run(trained_run)
    hf_tok = AutoTokenizer.from_pretrained(hf_dir)  # the tokenizer `convert --hf` exported beside the weights
    sample = "To be, or not to be, that is the question:\n  Whether 'tis nobler in the mind to suffer"
    assert hf_tok.encode(sample, add_special_tokens=False) == run.tokenizer.encode(sample)

    ours = _evaluate('nanogpt', monkeypatch, model_args=f'out_dir={trained_run}', batch_size=3, device='cpu')
    hflm = HFLM(pretrained=str(hf_dir), tokenizer=hf_tok, batch_size=4, device='cpu', dtype='float32',
                prefix_token_id=run.tokenizer.eot, logits_cache=False)
    theirs = _evaluate(hflm, monkeypatch)
    a, b = _responses(ours), _responses(theirs)
    assert a.keys() == b.keys() and len(a) == 24 + 8 + 24
    n_ll = 0
    for key, resps in a.items():
        for ra, rb in zip(resps, b[key], strict=True):
            if key[0] == 'shakespeare_continue':  # generated text
                assert ra == rb, key
            elif key[0] == 'shakespeare_cloze':  # (log-likelihood, is greedy) per choice
                assert ra[0][0] == pytest.approx(rb[0][0], abs=1e-4) and ra[0][1] == rb[0][1], key
                n_ll += 1
            else:  # rolling log-likelihood of a whole sonnet (several windows of 32 tokens)
                assert ra[0] == pytest.approx(rb[0], abs=1e-4), key
    assert n_ll == 96
    for task, metric in (('shakespeare_cloze', 'acc,none'), ('shakespeare_cloze', 'acc_norm,none'),
                         ('shakespeare_continue', 'exact_match,none'), ('shakespeare_ppl', 'bits_per_byte,none'),
                         ('shakespeare_ppl', 'word_perplexity,none')):
        assert ours['results'][task][metric] == pytest.approx(theirs['results'][task][metric], rel=1e-6), metric
    texts = [r[0] for (t, _), r in a.items() if t == 'shakespeare_continue']
    assert any(texts)  # the generation comparison compared text, not only empty strings


ARCHITECTURES = {
    'dyt': dict(norm='dyt'),
    'dyisru': dict(norm='dyisru', bias=True),
    'oec': dict(norm='rmsnorm', pos='rope', mlp='swiglu', qk_norm=True, n_kv_head=1, tie_embeddings=False,
                init='xavier'),
    'softcap-dyisru-sp': dict(norm='dyisru_sp', logit_softcap=5.0, mlp='gelu_tanh'),
}
PAIRS = [("To be, or not to be, that is the", " question"), ("Shall I compare thee", " to a summer's day?"),
         ("", "Rough winds do shake"),  # empty context: one EOT instead
         ("From fairest creatures we desire increase, That thereby beauty's rose might never die, But as the "
          "riper should by time decease,", " His tender heir")]  # longer than the context: truncated left


@pytest.mark.parametrize('arch', ARCHITECTURES, ids=list(ARCHITECTURES))
def test_every_architecture_scores_as_an_independent_forward(trained_run, arch):
    tok = checkpoint.load_run(trained_run).tokenizer
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=2, n_head=2, n_embd=32,
                          **ARCHITECTURES[arch])).eval()
    lm = lmeval.GPTLM(model=model, tokenizer=tok, batch_size=3, device='cpu')
    requests = [Instance('loglikelihood', {}, pair, i) for i, pair in enumerate(PAIRS)]
    got = lm.loglikelihood(requests, disable_tqdm=True)
    L = model.config.block_size
    for (ctx, cont), (logp, greedy) in zip(PAIRS, got, strict=True):
        if ctx:
            whole, c = tok.encode(ctx + cont), tok.encode(ctx)
            k = whole[len(c):]  # lm-eval's split: the continuation is what the context's ids do not cover
        else:
            c, k = [tok.eot], tok.encode(cont)
        seq = torch.tensor((c + k)[-(L + 1):])
        with torch.no_grad():
            lp = F.log_softmax(model(seq[None, :-1])[0], dim=-1)[-len(k):]  # (len(k), V)
        want = lp.gather(1, torch.tensor(k)[:, None]).sum().item()
        assert logp == pytest.approx(want, abs=1e-4), (arch, ctx)
        assert greedy == bool((lp.argmax(-1) == torch.tensor(k)).all())
    assert len(tok.encode(PAIRS[3][0])) > L  # the truncation was exercised

    text = "When forty winters"  # one window: log p(text | EOT)
    ids = tok.encode(text)
    with torch.no_grad():
        lp = F.log_softmax(model(torch.tensor([[tok.eot] + ids[:-1]]))[0], dim=-1)
    want = lp.gather(1, torch.tensor(ids)[:, None]).sum().item()
    assert lm.loglikelihood_rolling([Instance('loglikelihood_rolling', {}, (text,), 0)], True)[0] == \
        pytest.approx(want, abs=1e-4)


def test_generate_until_is_greedy_decoding_within_the_context_cut_at_the_stop_strings(trained_run):
    run = checkpoint.load_run(trained_run)
    tok, model = run.tokenizer, run.model
    lm = lmeval.GPTLM(out_dir=str(trained_run), batch_size=2, device='cpu')
    prompts = ["Shall I compare thee", "Shall I compare thee to a summer's", "O Romeo, Romeo, wherefore art thou"
               " Romeo? Deny thy father and refuse thy name; Or if thou wilt not, be but sworn my love"]
    kwargs = dict(until=['zz'], max_gen_toks=10, do_sample=False)
    got = lm.generate_until([Instance('generate_until', {}, (p, kwargs), i) for i, p in enumerate(prompts)], True)
    L = model.config.block_size
    for p, text in zip(prompts, got, strict=True):
        ids = tok.encode(p)[-(L - 10):]  # room for the 10 new tokens
        new = model.generate(torch.tensor([ids]), 10, temperature=0)[0, len(ids):].tolist()
        new = new[:new.index(tok.eot)] if tok.eot in new else new
        assert text == tok.decode(new)
    stop = got[0][len(got[0]) // 2:][:2]  # a piece of the first text as stop string: cut before it
    cut = lm.generate_until([Instance('generate_until', {}, (prompts[0], dict(kwargs, until=[stop])), 0)], True)
    assert cut[0] == got[0][:got[0].index(stop)]


@pytest.mark.slow
def test_the_command_line_is_lm_evals_with_our_model(trained_run, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1')
    p = subprocess.run([sys.executable, 'lmeval.py', 'run', '--model', 'nanogpt', '--model_args',
                        f'out_dir={trained_run}', '--tasks', 'shakespeare_cloze', '--include_path', 'evals',
                        '--device', 'cpu', '--limit', '4', '--output_path', str(tmp_path / 'res')],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    [res] = list((tmp_path / 'res').rglob('results_*.json'))
    acc = json.loads(res.read_text())['results']['shakespeare_cloze']['acc,none']
    assert 0 <= acc <= 1 and 'shakespeare_cloze' in p.stdout
