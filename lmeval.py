"""
lm-eval on our GPT: a model adapter for EleutherAI's LM Evaluation Harness (lm-eval; Biderman et al. 2024,
"Lessons from the Trenches on Reproducible Evaluation of Language Models", arXiv:2405.14782), so any run we train,
every architecture (DyT, DyISRU, RoPE, SwiGLU, qk-norm, soft-capping) included, is scored on lm-eval tasks. It
runs model.GPT itself, so nothing has to be exported first.

    python lmeval.py run --model nanogpt --model_args out_dir=out --tasks shakespeare_cloze,shakespeare_ppl \\
        --include_path evals
    python lmeval.py run --model nanogpt --model_args out_dir=out,dtype=bfloat16 --device cuda --batch_size 32 \\
        --tasks hellaswag,arc_easy

`python lmeval.py ...` is lm-eval's own command line (`lm_eval ...`: the same keys, `python lmeval.py run -h`
lists them) with the model `nanogpt` registered first: lm-eval has no plugin hook through which the plain `lm_eval`
command could find a model class outside its package. From Python, `import lmeval` registers it:

    import lm_eval, lmeval
    lm_eval.simple_evaluate(model='nanogpt', model_args='out_dir=out', tasks=['shakespeare_cloze'],
                            task_manager=lm_eval.tasks.TaskManager(include_path='evals'))
    lm_eval.simple_evaluate(model=lmeval.GPTLM(model=gpt, tokenizer=tok), tasks=[...])  # a GPT in memory

model_args: out_dir (a train.py run folder, read by checkpoint.load_run), tokenizer (a spec; '' = the run's own),
dtype ('float32' | 'bfloat16': autocast as train.py's dtype). lm-eval passes batch_size and device.

Requests are scored as lm-eval's HF model (lm_eval.models.huggingface.HFLM) scores them, so the two agree on the
same weights (tests/test_lmeval.py): context/continuation split by lm-eval's TemplateLM, the empty context replaced
by one EOT (our documents start with EOT, data.py), inputs longer than the context (block_size) truncated from
the left, rolling log-likelihood over lm-eval's disjoint windows of block_size tokens, generation greedy unless a
task samples, stopped at the task's stop strings or EOT. Faster than HFLM: only the continuation positions go
through the output embedding (HFLM takes a log-softmax over every position, (B, T, V)).
"""
import sys
from itertools import groupby

import torch
import torch.nn.functional as F
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from configurator import ConfigError
from evaluation import output_logits

_GEN_CHUNK = 32  # generate this many tokens between checks for the stop strings


@register_model('nanogpt')
class GPTLM(TemplateLM):
    """lm-eval's LM over a model.GPT: from a run folder (out_dir) or a GPT and Tokenizer in memory.
    batch_size: requests per forward (an int: lm-eval's 'auto' is not supported). device: where the model runs
    ('' = cuda if available). dtype: 'float32' | 'bfloat16' (autocast). max_batch_size (passed by lm-eval for its
    'auto' batch size) is ignored. Raises ConfigError/CheckpointError (one line) for bad arguments or a run
    folder that does not load."""

    def __init__(self, out_dir: str = '', model=None, tokenizer='', batch_size: int | str = 8, device: str = '',
                 dtype: str = 'float32', max_batch_size: int | None = None) -> None:
        super().__init__()
        from checkpoint import load_run
        device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        if dtype not in ('float32', 'bfloat16'):
            raise ConfigError(f"dtype={dtype!r}: use float32 or bfloat16 (model_args=...,dtype=bfloat16)")
        try:
            self.batch_size = int(batch_size)
        except ValueError:
            raise ConfigError(f"batch_size={batch_size!r}: nanogpt takes a number (--batch_size 16), not "
                              f"lm-eval's 'auto'") from None
        if (model is None) == (not out_dir):
            raise ConfigError("nanogpt needs out_dir=RUN (model_args=out_dir=out) or, from Python, model= and "
                              "tokenizer=")
        if model is None:
            model, tokenizer = load_run(out_dir, device, tokenizer)[:2]
        elif isinstance(tokenizer, str):
            raise ConfigError("a GPT given as model= needs its tokenizer.Tokenizer as tokenizer=")
        self.model, self.tok = model.to(device).eval(), tokenizer
        self._device = torch.device(device)
        self.autocast = (torch.autocast(self._device.type, dtype=torch.bfloat16) if dtype == 'bfloat16'
                         else torch.autocast(self._device.type, enabled=False))
        self.max_gen_toks = 256  # lm-eval's default for generate_until when a task does not say

    # -- what TemplateLM asks for -------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tok.eot

    @property
    def prefix_token_id(self) -> int:
        return self.tok.eot  # the token every training document starts with (data.py)

    @property
    def max_length(self) -> int:
        return self.model.config.block_size

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    # -- scoring ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding gives the continuation) per (context ids,
        continuation ids), one padded forward for all. The input is context + continuation minus its last
        token, truncated from the left to block_size (lm-eval's rule)."""
        L = self.max_length
        inps, rows, cols, targets = [], [], [], []
        for i, (ctx, cont) in enumerate(pairs):
            if len(cont) > L:
                raise ValueError(f"a continuation of {len(cont)} tokens is longer than the model's context "
                                 f"{L}: it cannot be scored")
            inp = (ctx + cont)[-(L + 1):][:-1]
            inps.append(inp)
            rows += [i] * len(cont)
            cols += range(len(inp) - len(cont), len(inp))  # the positions whose next token is the continuation
            targets += cont
        x = torch.zeros(len(inps), max(map(len, inps)), dtype=torch.long)  # right padding: causal attention
        for i, inp in enumerate(inps):  # never lets a real position see it
            x[i, :len(inp)] = torch.tensor(inp)
        x, y = x.to(self._device), torch.tensor(targets, device=self._device)
        rows, cols = torch.tensor(rows, device=self._device), torch.tensor(cols, device=self._device)
        with self.autocast:
            h = self.model.hidden_states(x)[rows, cols]  # (N, C), N = the continuation tokens of all pairs
            logits = output_logits(self.model, h).float()  # (N, V)
        logp = F.log_softmax(logits, dim=-1).gather(1, y[:, None])[:, 0]  # (N,)
        greedy = logits.argmax(dim=-1) == y
        sizes = [len(cont) for _, cont in pairs]
        return [(lp.sum().item(), bool(g.all())) for lp, g in zip(logp.split(sizes), greedy.split(sizes))]

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: ((context, continuation) or None, context ids, continuation ids); longest first, in batches
        of batch_size (lm-eval's Collator restores the order)."""
        order = Collator(requests, sort_fn=lambda r: (-len(r[1]) - len(r[2]), tuple(r[1] + r[2])))
        res = []
        with tqdm(total=len(requests), disable=disable_tqdm, desc='nanogpt loglikelihood') as bar:
            for chunk in order.get_batched(n=self.batch_size):
                for (key, _, _), answer in zip(chunk, self._score([(c, k) for _, c, k in chunk])):
                    if key is not None:
                        self.cache_hook.add_partial('loglikelihood', key, answer)
                    res.append(answer)
                bar.update(len(chunk))
        return order.get_original(res)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """log p(text) of each request's whole text: lm-eval's disjoint windows of block_size tokens, the first
        predicted from one EOT (as HFLM's loglikelihood_rolling)."""
        windows, counts = [], []
        for (string,) in [r.args for r in requests]:
            w = [(None, *utils.make_disjoint_window(win)) for win in utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            windows += w
            counts.append(len(w))
        scores = iter(self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm))
        out = []
        for r, n in zip(requests, counts):
            out.append(sum(next(scores)[0] for _ in range(n)))
            self.cache_hook.add_partial('loglikelihood_rolling', r.args, out[-1])
        return out

    # -- generation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Continue each context until EOT, one of the task's stop strings or max_gen_toks tokens: greedy unless
        the task sets do_sample with a temperature. Contexts are truncated from the left to block_size -
        max_gen_toks tokens (HFLM's rule); requests with the same settings and context length share a batch
        (model.generate takes rows of one length)."""
        jobs = []
        for i, (context, gen_kwargs) in enumerate(r.args for r in requests):
            kw = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kw.pop('until', None), eos=None)  # EOT is stopped on as a token
            n_new = kw.pop('max_gen_toks')
            if n_new >= self.max_length:
                raise ValueError(f"max_gen_toks={n_new} leaves no room for a context in the model's "
                                 f"{self.max_length} tokens: lower the task's max_gen_toks")
            ids = self.tok_encode(context)[-(self.max_length - n_new):] or [self.prefix_token_id]
            temperature = kw.get('temperature', 0.0) if kw.get('do_sample') else 0.0
            jobs.append((repr((until, n_new, temperature)), len(ids), i, ids, until, n_new, temperature))
        jobs.sort(key=lambda j: j[:3])
        out = [''] * len(requests)
        with tqdm(total=len(jobs), disable=disable_tqdm, desc='nanogpt generate_until') as bar:
            for _, same in groupby(jobs, key=lambda j: j[:2]):
                same = list(same)
                for b in range(0, len(same), self.batch_size):
                    batch = same[b:b + self.batch_size]
                    _, _, _, _, until, n_new, temperature = batch[0]
                    for j, text in zip(batch, self._generate([j[3] for j in batch], until, n_new, temperature)):
                        out[j[2]] = text
                        self.cache_hook.add_partial('generate_until', requests[j[2]].args, text)
                    bar.update(len(batch))
        return out

    def _generate(self, prompts: list[list[int]], until: list[str], n_new: int, temperature: float) -> list[str]:
        """Continue prompts of equal length in chunks of _GEN_CHUNK tokens until every row has met EOT or a stop
        string (or n_new tokens); each text ends before its first EOT, then before its first stop string
        (lm-eval's postprocess_generated_text)."""
        idx = torch.tensor(prompts, device=self._device)  # (B, T)
        T, eot = idx.size(1), self.eot_token_id
        while True:
            with self.autocast:
                idx = self.model.generate(idx, min(_GEN_CHUNK, n_new - (idx.size(1) - T)), temperature=temperature,
                                          stop_tokens=[eot])
            new = [row[T:T + n_new] for row in idx.tolist()]
            new = [row[:row.index(eot)] if eot in row else row for row in new]  # (B, <= n_new)
            texts = [self.tok_decode(row) for row in new]
            done = [eot in row[T:] or any(s in t for s in until) for row, t in zip(idx.tolist(), texts)]
            if all(done) or idx.size(1) - T >= n_new:
                return [postprocess_generated_text(t, stop=until, think_end_token=None) for t in texts]


def main() -> None:
    """lm-eval's command line (lm_eval.__main__.cli_evaluate) with the model 'nanogpt' registered."""
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == '__main__':
    from configurator import run_cli  # our own bad input (a missing run folder, ...): one line, exit 1
    sys.argv[0] = 'lmeval.py'
    run_cli('lmeval.py', main)
