"""sample.py end to end: a tiny checkpoint written here, sampled through the command line."""
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
tokenizer = pytest.importorskip("tokenizer", reason="tokenizer.py (tokenizer engineer) not written yet")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "sample.py"), "--device=cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A compiled-model style checkpoint ('_orig_mod.' keys) whose model always predicts <|endoftext|>."""
    tok = tokenizer.get_tokenizer("gpt2")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16,
                          tie_embeddings=False))
    with torch.no_grad():  # constant final hidden state b, and lm_head row eot = 100 b: eot always wins
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(torch.randn(16))
        model.lm_head.weight[tok.eot] = 100 * model.transformer.ln_f.bias
    out = tmp_path_factory.mktemp("run")
    torch.save({"model": {"_orig_mod." + k: v for k, v in model.state_dict().items()},
                "model_args": asdict(model.config), "config": {"tokenizer": "gpt2"}}, out / "ckpt.pt")
    return out


@pytest.mark.slow
def test_sample_prompt_and_seed(run_dir, tmp_path):
    (tmp_path / "prompt.txt").write_text("Hello there", encoding="utf-8")
    args = (f"--out_dir={run_dir}", f"--start=FILE:{tmp_path / 'prompt.txt'}", "--num_samples=2",
            "--max_new_tokens=3", "--temperature=0")
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split("---------------\n")
    assert samples[:2] == ["Hello there" + "<|endoftext|>" * 3 + "\n"] * 2 and samples[2] == ""


@pytest.mark.slow
def test_sample_chat_stops_at_end_of_turn(run_dir):
    r = _run(f"--out_dir={run_dir}", "--start=What is 2+2?", "--chat=True", "--num_samples=1",
             "--max_new_tokens=5", "--seed=3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "\n---------------\n"  # the reply ended at once: eot is a stop token in chat mode


def test_sample_missing_checkpoint(tmp_path):
    r = _run(f"--out_dir={tmp_path}")
    assert r.returncode != 0 and "ckpt.pt not found" in r.stderr and "--out_dir" in r.stderr
