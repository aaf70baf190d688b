"""sample.py end to end on a run folder written by train.py (a tiny model on a data.py dataset), sampled
through the command line and compared with the same greedy decoding done here through checkpoint.load_run."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import run_train
from torch.nn import functional as F

from chat import format_chat
from checkpoint import load_run
from model import GPT, GPTConfig
from tokenizer import get_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), "--device=cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_dataset) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run_train(out, tiny_dataset.parent, dataset=tiny_dataset.name, max_iters=3, eval_interval=3)
    return out


def _greedy(run_dir: Path, ids: list[int], n: int, stop_tokens=None) -> list[int]:
    model = load_run(run_dir).model
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), n, temperature=0, stop_tokens=stop_tokens)
    return out[0, len(ids):].tolist()


@pytest.mark.slow
def test_sample_prompt_greedy_matches_the_runs_model(run_dir, tmp_path):
    (tmp_path / "prompt.txt").write_text("To be, or not", encoding="utf-8")
    r = _run(f"--out_dir={run_dir}", f"--start=FILE:{tmp_path / 'prompt.txt'}", "--num_samples=2",
             "--max_new_tokens=6", "--temperature=0")
    assert r.returncode == 0, r.stderr
    tok = load_run(run_dir).tokenizer
    ids = tok.encode("To be, or not")
    expected = tok.decode(ids + _greedy(run_dir, ids, 6))
    assert r.stdout.split("---------------\n") == [expected + "\n"] * 2 + [""]


@pytest.mark.slow
def test_sample_chat_stops_at_end_of_turn(run_dir):
    r = _run(f"--out_dir={run_dir}", "--start=What is 2+2?", "--chat=True", "--num_samples=1",
             "--max_new_tokens=8", "--temperature=0")
    assert r.returncode == 0, r.stderr
    tok = load_run(run_dir).tokenizer
    ids, _ = format_chat([{"role": "user", "content": "What is 2+2?"}], tok, add_generation_prompt=True)
    stops = [t for t in (tok.bos, tok.eot) if t is not None]
    new = _greedy(run_dir, ids, 8, stops)
    cut = [i for i, t in enumerate(new) if t in stops]
    assert r.stdout == tok.decode(new[:cut[0]] if cut else new).strip() + "\n---------------\n"


def test_sample_refuses_another_tokenizer(run_dir):
    r = _run(f"--out_dir={run_dir}", "--tokenizer=gpt2", "--max_new_tokens=1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "another tokenizer" in r.stderr and "drop --tokenizer" in r.stderr


def test_sample_missing_checkpoint(tmp_path):
    r = _run(f"--out_dir={tmp_path}")
    assert r.returncode != 0 and "ckpt.pt not found" in r.stderr and "--out_dir" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_sample_from_a_hugging_face_folder_equals_the_run(trained_run, tmp_path):
    """--hf_dir: the producer run converted by `checkpoint.py convert --hf` and sampled from that folder with the
    run's own tokenizer gives the same greedy text as sampling the run folder itself."""
    hf = tmp_path / "hf"
    conv = subprocess.run([sys.executable, str(ROOT / "checkpoint.py"), "convert", f"--out_dir={trained_run}",
                           f"--hf={hf}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert conv.returncode == 0, conv.stderr
    spec = load_run(trained_run).config["tokenizer_spec"]
    args = ["--start=To be", "--num_samples=1", "--max_new_tokens=8", "--temperature=0"]
    from_run = _run(f"--out_dir={trained_run}", *args)
    from_hf = _run(f"--hf_dir={hf}", f"--tokenizer={spec}", *args)
    assert from_run.returncode == 0 and from_hf.returncode == 0, from_run.stderr + from_hf.stderr
    assert from_hf.stdout == from_run.stdout and from_run.stdout.startswith("To be")
    assert "--tokenizer" in _run(f"--hf_dir={hf}", *args).stderr  # an HF folder needs its tokenizer named


@pytest.mark.slow
def test_a_nanogpt_char_folder_samples_with_its_meta_pkl(tmp_path):
    """A run on nanoGPT's character-level layout (train.bin/val.bin uint16 + meta.pkl with stoi/itos, as its
    data/shakespeare_char/prepare.py writes): sample.py decodes with meta.pkl's characters, the greedy output
    equal to the run's model; without the character tables it says why and what to pass."""
    import pickle

    import numpy as np
    from conftest import train_py

    from data import shakespeare_files
    text = shakespeare_files()[0].read_text(encoding="utf-8")[:40_000]
    chars = sorted(set(text))
    stoi, itos = {c: i for i, c in enumerate(chars)}, dict(enumerate(chars))
    folder = tmp_path / "data" / "shakespeare_char"
    folder.mkdir(parents=True)
    ids = np.array([stoi[c] for c in text], np.uint16)
    ids[:36_000].tofile(folder / "train.bin")
    ids[36_000:].tofile(folder / "val.bin")
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": len(chars), "itos": itos, "stoi": stoi}))
    out = tmp_path / "run"
    r = train_py(out, folder.parent, "shakespeare_char")
    assert r.returncode == 0, r.stderr[-3000:]
    prompt = "The "
    r = _run(f"--out_dir={out}", f"--start={prompt}", "--num_samples=1", "--max_new_tokens=8", "--temperature=0")
    assert r.returncode == 0, r.stderr[-3000:]
    expected = prompt + "".join(itos[i] for i in _greedy(out, [stoi[c] for c in prompt], 8))
    assert r.stdout.split("\n---------------")[0] == expected
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": len(chars)}))  # no character tables
    r = _run(f"--out_dir={out}", f"--start={prompt}")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "has no character tables" in r.stderr


# -----------------------------------------------------------------------------------------------------------
# Sampling does what the README says: temperature, top_k, greedy (temperature=0) and the
# chat path.  The model's next-token distribution is planted: with ln_f's weight at 0 its output is its bias b
# whatever the input, so with b = e_0 the logits are exactly column 0 of the output embedding, a vector we choose. -
# model.generate: the empirical distribution of many one-token draws equals softmax(logits / T) restricted   to the
# top_k tokens (checked within 5 standard errors), and greedy always takes the argmax; - sample.py on the shared
# producer run (train.py's checkpoint, config and tokenizer, with only the tensor   values above changed): its output
# equals an independent sampler that draws from the planted distribution   with the same seed, so a temperature,
# top_k or stop-token rule that is lost or misapplied changes the text.

LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.0, -0.5, -1.0, -2.0, -3.0])  # planted next-token logits, vocab 8


def _plant(state: dict, logits: torch.Tensor) -> dict:
    """A copy of a GPT state dict whose next-token logits are `logits` for every input (tied or untied)."""
    state = {k: v.clone() for k, v in state.items()}
    out = 'lm_head.weight' if 'lm_head.weight' in state else 'transformer.wte.weight'
    state['transformer.ln_f.weight'].zero_()
    state['transformer.ln_f.bias'].zero_()
    state['transformer.ln_f.bias'][0] = 1.0
    state[out][:, 0] = 0.0
    state[out][:len(logits), 0] = logits
    state[out][len(logits):, 0] = -30.0  # tokens beyond the planted ones: probability ~1e-13
    if out == 'transformer.wte.weight' and 'lm_head.weight' in state:
        state['lm_head.weight'] = state[out]
    return state


@pytest.fixture(scope='module')
def planted() -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(LOGITS), block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True,
                          tie_embeddings=False))
    model.load_state_dict(_plant(model.state_dict(), LOGITS))
    return model.eval()


def _frequencies(model: GPT, n: int, **kw) -> torch.Tensor:
    torch.manual_seed(1)
    idx = torch.randint(0, len(LOGITS), (n, 3))  # any prompt: the planted distribution ignores it
    new = model.generate(idx, 1, **kw)[:, -1]
    return torch.bincount(new, minlength=len(LOGITS)).double() / n


def _expected(temperature: float, top_k: int | None) -> torch.Tensor:
    keep = torch.zeros(len(LOGITS), dtype=torch.bool)
    keep[torch.argsort(LOGITS, descending=True)[:top_k or len(LOGITS)]] = True
    p = torch.where(keep, (LOGITS.double() / temperature).exp(), torch.zeros(()).double())
    return p / p.sum()


@pytest.mark.parametrize('temperature, top_k', [(1.0, None), (0.5, None), (2.0, None), (1.0, 3), (2.0, 2)])
def test_generate_samples_softmax_of_logits_over_temperature_within_top_k(planted, temperature, top_k):
    n = 40_000
    freq = _frequencies(planted, n, temperature=temperature, top_k=top_k)
    want = _expected(temperature, top_k)
    se = (want * (1 - want) / n).sqrt()
    assert torch.all((freq - want).abs() <= 5 * se + 1e-12), (temperature, top_k, freq, want)
    assert torch.all(freq[want == 0] == 0)  # outside the top_k: never drawn
    # the distributions differ enough that a lost temperature or top_k is caught at this n
    if (temperature, top_k) != (1.0, None):
        assert (want - _expected(1.0, None)).abs().max() > 10 * se.max()


def test_generate_temperature_zero_is_greedy(planted):
    torch.manual_seed(0)
    out = planted.generate(torch.zeros(4, 1, dtype=torch.long), 5, temperature=0)
    assert torch.equal(out[:, 1:], torch.zeros(4, 5, dtype=torch.long))  # argmax of LOGITS is token 0


def test_generate_stops_once_every_row_has_a_stop_token(planted):
    torch.manual_seed(0)
    out = planted.generate(torch.zeros(64, 1, dtype=torch.long), 50, temperature=1.0, stop_tokens=[2])
    assert out.size(1) < 51  # stopped early ...
    assert all(2 in row.tolist()[1:] for row in out)  # ... only once every row holds the stop token
    # the last column is the first stop of at least one row: not one step later
    first_stop = [row.tolist()[1:].index(2) for row in out]
    assert max(first_stop) == out.size(1) - 2


def _planted_run(trained_run: Path, tmp_path: Path, logits: dict[int, float]) -> tuple[Path, object]:
    """A copy of the shared producer run whose checkpoint's next-token logits are `logits` (token id ->
    logit; every other token -30). Keys, config and tokenizer stay exactly as train.py wrote them."""
    run = tmp_path / 'run'
    shutil.copytree(trained_run, run)
    ckpt = torch.load(run / 'ckpt.pt', weights_only=True)
    V = ckpt['model_args']['vocab_size']
    full = torch.full((V,), -30.0)
    for t, v in logits.items():
        full[t] = v
    ckpt['model'] = _plant(ckpt['model'], full)
    torch.save(ckpt, run / 'ckpt.pt')
    return run, get_tokenizer(ckpt['config']['tokenizer_spec'])


def _reference_draws(logits: dict[int, float], model_args: dict, temperature: float, top_k: int | None,
                     seed: int, n_samples: int, n_tokens: int, stop: set[int] = frozenset()) -> list[list[int]]:
    """Independent sampler with sample.py's RNG protocol (nanoGPT's): torch.manual_seed(seed), the model is
    built (its init draws from the RNG), then one torch.multinomial over the whole vocabulary per new token,
    from the planted distribution."""
    V = model_args['vocab_size']
    full = torch.full((1, V), -30.0)
    for t, v in logits.items():
        full[0, t] = v
    probs = F.softmax(full / temperature, dim=-1) if temperature else None
    if temperature and top_k is not None:
        kth = torch.topk(full / temperature, top_k).values[0, -1]
        probs = F.softmax(torch.where(full / temperature < kth, -math.inf, full / temperature), dim=-1)
    torch.manual_seed(seed)
    GPT(GPTConfig(**model_args))
    out = []
    for _ in range(n_samples):
        draws = []
        for _ in range(n_tokens):
            t = int(full.argmax()) if not temperature else int(torch.multinomial(probs, 1))
            draws.append(t)
            if t in stop:
                break
        out.append(draws)
    return out


def _sample_py(*args: str) -> list[str]:
    r = subprocess.run([sys.executable, str(ROOT / 'sample.py'), '--device=cpu', '--dtype=float32', *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split('---------------\n')[:-1]


@pytest.mark.slow
def test_sample_py_temperature_and_top_k_reach_the_sampler(trained_run, tmp_path):
    # the V planted tokens carry most of the mass; the vocabulary's other tokens get -30 (never drawn)
    tok_ids = list(range(300, 312))  # word pieces (ids below ~260 are byte fallbacks such as \r)
    logits = {t: 0.3 * k for k, t in enumerate(tok_ids)}
    run, tok = _planted_run(trained_run, tmp_path, logits)
    args = torch.load(run / 'ckpt.pt', weights_only=True)['model_args']
    prompt = 'To be'
    cases = [dict(temperature=1.0, top_k=None), dict(temperature=0.3, top_k=None),
             dict(temperature=2.0, top_k=3), dict(temperature=0, top_k=None)]
    outputs = []
    for case in cases:
        got = _sample_py(f'--out_dir={run}', f'--start={prompt}', '--num_samples=2', '--max_new_tokens=12',
                         '--seed=5', f"--temperature={case['temperature']}", f"--top_k={case['top_k']}")
        want = _reference_draws(logits, args, case['temperature'], case['top_k'], 5, 2, 12)
        assert got == [tok.decode(tok.encode(prompt) + w) + '\n' for w in want], case
        outputs.append(got)
    assert len({tuple(o) for o in outputs}) == len(cases)  # every setting changed the text
    greedy = _reference_draws(logits, args, 0, None, 5, 1, 12)[0]
    assert greedy == [tok_ids[-1]] * 12  # temperature=0: the argmax, every time


@pytest.mark.slow
def test_sample_py_chat_reply_ends_at_the_first_stop_token(trained_run, tmp_path):
    """Chat mode: the reply is cut at the first <s> or <|endoftext|> the model samples (GPT-SW3 format)."""
    cfg = json.loads((trained_run / 'config.json').read_text())
    tok, args = get_tokenizer(cfg['tokenizer_spec']), cfg['model_args']
    stops = {tok.bos, tok.eot}
    words = list(range(300, 306))
    logits = {t: 1.0 for t in words} | {tok.bos: 0.0, tok.eot: -0.5}  # stop after ~4 tokens on average
    run, _ = _planted_run(trained_run, tmp_path, logits)
    got = _sample_py(f'--out_dir={run}', '--chat=True', '--start=Vad heter du?', '--num_samples=3',
                     '--max_new_tokens=30', '--seed=11', '--temperature=1.0')
    want = _reference_draws(logits, args, 1.0, None, 11, 3, 30, stop=stops)
    assert any(w[-1] in stops and len(w) > 2 for w in want)  # the case under test happens in this draw
    assert got == [tok.decode([t for t in w if t not in stops]).strip() + '\n' for w in want]
