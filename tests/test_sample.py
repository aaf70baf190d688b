"""sample.py end to end on a run folder written by train.py (a tiny model on a data.py dataset), sampled
through the command line and compared with the same greedy decoding done here through checkpoint.load_run."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import run_train

from chat import format_chat
from checkpoint import load_run

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
