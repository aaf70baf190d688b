"""
The BERT encoder for NER in one file: the word-splitting rules of BERT's "basic tokenizer", the WordPiece
tokenizer (equal to Hugging Face BertTokenizerFast on the same vocab.txt: ids and char offsets) and the
post-LN encoder with a token-classification head (Devlin et al. 2019, arXiv 1810.04805, §3 and §4.3),
loaded from and saved to the Hugging Face BertForTokenClassification layout.

    tok = WordPieceTokenizer.from_dir(folder)          # vocab.txt + tokenizer_config.json
    ids, offsets = tok.tokenize("Anna bor i Lund.")    # no [CLS]/[SEP]
    model = BertForTokenClassification.from_hf(folder, num_labels)
    logits = model(idx, attention_mask)                # (B, T) -> (B, T, num_labels)

Used by ner.py (fine-tuning, inference) and nerdata.py (pretokenize: words with exact char offsets).
"""
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hf import read_weights as _read_hf_weights

# -----------------------------------------------------------------------------
# word splitting (the BERT "basic tokenizer" rules, on the original text so offsets are exact)

# Hugging Face tokenizers (BertNormalizer, BertPreTokenizer) classifies characters with the Unicode 8.0 tables of
# the Rust unicode_categories crate, lowercases with Rust's newer tables, and keeps unassigned code points; Python
# 3.11's unicodedata is Unicode 14.0. The code points where the two disagree, found by comparing every code point
# with BertTokenizerFast (tests/test_bert.py checks them, and every Unicode block, against it):


def _ranges(*pairs: tuple[int, int]) -> frozenset[str]:
    return frozenset(chr(c) for a, b in pairs for c in range(a, b + 1))


_HF_KEEPS = _ranges(  # Cf in Unicode 14.0, unknown to HF's tables: kept
    (0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD), (0x13430, 0x13438),
)
_HF_NOT_PUNCT = _ranges(  # P* in Unicode 14.0, unknown to HF's tables: not split
    (0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84), (0x1B7D, 0x1B7E),
    (0x2E43, 0x2E4F), (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55, 0x10F59), (0x10F86, 0x10F89),
    (0x1144B, 0x1144F), (0x1145A, 0x1145B), (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9),
    (0x1183B, 0x1183B), (0x11944, 0x11946), (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C),
    (0x11A9E, 0x11AA2), (0x11C41, 0x11C45), (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF, 0x11FFF),
    (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A), (0x16FE2, 0x16FE2), (0x1E95E, 0x1E95F),
)
_HF_PUNCT = _ranges(  # punctuation in HF's tables, another category in 14.0
    (0x166D, 0x166D), (0x111C9, 0x111C9),
)
_HF_NOT_MN = _ranges(  # Mn in Unicode 14.0, unknown to HF's tables: not stripped
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE, 0x9FE), (0xAFA, 0xAFF), (0xB55, 0xB55), (0xC04, 0xC04),
    (0xC3C, 0xC3C), (0xD00, 0xD00), (0xD3B, 0xD3C), (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F),
    (0x1885, 0x1886), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF),
    (0xA9BD, 0xA9BD), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85),
    (0x11070, 0x11070), (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9), (0x111CF, 0x111CF),
    (0x1123E, 0x1123E), (0x1133B, 0x1133B), (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446),
    (0x1145E, 0x1145E), (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E),
    (0x11943, 0x11943), (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0), (0x11A01, 0x11A0A),
    (0x11A33, 0x11A38), (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56), (0x11A59, 0x11A5B),
    (0x11A8A, 0x11A96), (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F),
    (0x11C92, 0x11CA7), (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36),
    (0x11D3A, 0x11D3A), (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91),
    (0x11D95, 0x11D95), (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x16F4F, 0x16F4F), (0x16FE4, 0x16FE4),
    (0x1CF00, 0x1CF2D), (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021),
    (0x1E023, 0x1E024), (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
    (0x1E944, 0x1E94A),
)
_HF_MN = _ranges(  # Mn in HF's tables, Mc in 14.0: stripped
    (0x1734, 0x1734),
)
# lowercase mappings of characters newer than Unicode 14.0 (Rust's tables know them)
_HF_LOWER_CHARS = {chr(k): chr(v) for k, v in {
    0x1C89: 0x1C8A, 0xA7CB: 0x264, 0xA7CC: 0xA7CD, 0xA7CE: 0xA7CF, 0xA7D2: 0xA7D3, 0xA7D4: 0xA7D5, 0xA7DA: 0xA7DB,
    0xA7DC: 0x19B, 0x10D50: 0x10D70, 0x10D51: 0x10D71, 0x10D52: 0x10D72, 0x10D53: 0x10D73, 0x10D54: 0x10D74,
    0x10D55: 0x10D75, 0x10D56: 0x10D76, 0x10D57: 0x10D77, 0x10D58: 0x10D78, 0x10D59: 0x10D79, 0x10D5A: 0x10D7A,
    0x10D5B: 0x10D7B, 0x10D5C: 0x10D7C, 0x10D5D: 0x10D7D, 0x10D5E: 0x10D7E, 0x10D5F: 0x10D7F, 0x10D60: 0x10D80,
    0x10D61: 0x10D81, 0x10D62: 0x10D82, 0x10D63: 0x10D83, 0x10D64: 0x10D84, 0x10D65: 0x10D85, 0x16EA0: 0x16EBB,
    0x16EA1: 0x16EBC, 0x16EA2: 0x16EBD, 0x16EA3: 0x16EBE, 0x16EA4: 0x16EBF, 0x16EA5: 0x16EC0, 0x16EA6: 0x16EC1,
    0x16EA7: 0x16EC2, 0x16EA8: 0x16EC3, 0x16EA9: 0x16EC4, 0x16EAA: 0x16EC5, 0x16EAB: 0x16EC6, 0x16EAC: 0x16EC7,
    0x16EAD: 0x16EC8, 0x16EAE: 0x16EC9, 0x16EAF: 0x16ECA, 0x16EB0: 0x16ECB, 0x16EB1: 0x16ECC, 0x16EB2: 0x16ECD,
    0x16EB3: 0x16ECE, 0x16EB4: 0x16ECF, 0x16EB5: 0x16ED0, 0x16EB6: 0x16ED1, 0x16EB7: 0x16ED2, 0x16EB8: 0x16ED3,
}.items()}


def is_removed_char(c: str) -> bool:
    """Characters BERT's text cleaning deletes (NUL, U+FFFD, control/format/private-use chars except tab and
    newlines). As HF tokenizers (BertNormalizer clean_text): unassigned code points (Cn) are kept."""
    if c in _HF_KEEPS:
        return False
    return c in "\x00\ufffd" or (c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs"))


def is_punctuation(c: str) -> bool:
    cp = ord(c)
    # all non-letter/number ASCII counts as punctuation in BERT ("$", "^", "`" too)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or c in _HF_PUNCT:
        return True
    return unicodedata.category(c).startswith("P") and c not in _HF_NOT_PUNCT


def is_nonspacing_mark(c: str) -> bool:
    """Mn, the marks accent stripping removes after NFD."""
    return c in _HF_MN or (unicodedata.category(c) == "Mn" and c not in _HF_NOT_MN)


def lowercase(s: str) -> str:
    return "".join(_HF_LOWER_CHARS.get(c) or c.lower() for c in s)


def is_cjk(c: str) -> bool:
    """The CJK ranges of BERT's _is_chinese_char, as HF keeps them (0x2B920, not 0x2B820, starts Extension E)."""
    cp = ord(c)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def pretokenize(text: str) -> list[tuple[int, int]]:
    """Split text into words (start, end): whitespace separates, each punctuation and CJK char is its own
    word, removed chars neither split nor count. Same words as HF BertPreTokenizer after BertNormalizer."""
    spans: list[tuple[int, int]] = []
    start = last = None
    for i, c in enumerate(text):
        if is_removed_char(c):
            continue
        if c.isspace() or is_punctuation(c) or is_cjk(c):
            if start is not None:
                spans.append((start, last + 1))
                start = None
            if not c.isspace():
                spans.append((i, i + 1))
            continue
        if start is None:
            start = i
        last = i
    if start is not None:
        spans.append((start, last + 1))
    return spans


# -----------------------------------------------------------------------------
# WordPiece tokenizer, equal to HF BertTokenizer(Fast) on the same vocab.txt (ids and offsets)

class WordPieceTokenizer:

    def __init__(self, vocab_file: str | Path, lowercase: bool = True, strip_accents: bool | None = None,
                 max_chars_per_word: int = 100):
        self.vocab = {}
        with open(vocab_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                self.vocab.setdefault(line.rstrip("\n"), i)
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents  # HF: follows lowercase
        self.max_chars_per_word = max_chars_per_word
        self.unk, self.cls, self.sep, self.pad = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))
        self._cache: dict[str, list[tuple[int, int, int]]] = {}

    @classmethod
    def from_dir(cls, path: str | Path) -> "WordPieceTokenizer":
        path = Path(path)
        cfg_file = path / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
        if not (path / "vocab.txt").exists():
            raise FileNotFoundError(f"{path}/vocab.txt not found: a BERT folder needs its WordPiece vocabulary")
        return cls(path / "vocab.txt", cfg.get("do_lower_case", True), cfg.get("strip_accents"))

    def save(self, path: Path) -> None:
        (path / "vocab.txt").write_text("".join(t + "\n" for t in sorted(self.vocab, key=self.vocab.get)),
                                        encoding="utf-8")
        (path / "tokenizer_config.json").write_text(json.dumps(dict(
            do_lower_case=self.lowercase, strip_accents=self.strip_accents, tokenizer_class="BertTokenizer")))

    def _normalize(self, c: str) -> str:
        if self.strip_accents:  # NFD, drop combining marks (HF BertNormalizer: strip accents, then lowercase)
            c = "".join(x for x in unicodedata.normalize("NFD", c) if not is_nonspacing_mark(x))
        return lowercase(c) if self.lowercase else c

    def _pieces(self, word: str) -> list[tuple[int, int, int]]:
        """(id, start, end) per piece, offsets relative to `word` (a pretokenize() word of the original text)."""
        if word in self._cache:
            return self._cache[word]
        chars, align = [], []  # normalized chars and the index of the original char each came from
        for i, c in enumerate(word):
            if not is_removed_char(c):
                for x in self._normalize(c):
                    chars.append(x)
                    align.append(i)
        s = "".join(chars)
        if not s:
            out = []
        elif len(s) > self.max_chars_per_word:
            out = [(self.unk, align[0], align[-1] + 1)]
        else:
            out, start = [], 0
            while start < len(s):  # greedy longest match first (Schuster & Nakajima 2012; BERT)
                end = len(s)
                while end > start and (s[start:end] if start == 0 else "##" + s[start:end]) not in self.vocab:
                    end -= 1
                if end == start:  # no piece fits: the whole word is [UNK]
                    out = [(self.unk, align[0], align[-1] + 1)]
                    break
                out.append((self.vocab[s[start:end] if start == 0 else "##" + s[start:end]], align[start],
                            align[end - 1] + 1))
                start = end
        self._cache[word] = out
        return out

    def encode_word(self, word: str) -> list[int]:
        ids = []
        for s, e in pretokenize(word):
            ids += [p[0] for p in self._pieces(word[s:e])]
        return ids

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """ids and (start, end) char offsets of every piece, without [CLS]/[SEP]."""
        ids, offsets = [], []
        for ws, we in pretokenize(text):
            for i, s, e in self._pieces(text[ws:we]):
                ids.append(i)
                offsets.append((ws + s, ws + e))
        return ids, offsets


# -----------------------------------------------------------------------------
# the encoder
# Post-LN BERT (Devlin et al. 2019) with a token-classification head, for ner.py. Parameter names are ours; from_hf
# and save_hf map them to and from the Hugging Face BertModel / BertForTokenClassification layout (_RENAMES).


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        d = json.loads(Path(path).read_text())
        act = d.get("hidden_act", "gelu")
        if act != "gelu" or d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only hidden_act='gelu' and absolute positions are supported "
                             f"(got {act!r}, {d.get('position_embedding_type')!r}); use a BERT-base-like checkpoint")
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class BertEmbeddings(nn.Module):

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        pos = torch.arange(T, device=idx.device)
        # token_type 0 everywhere: NER inputs are single segments
        x = self.word_embeddings(idx) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.dropout(self.norm(x))  # (B, T, H)


class BertLayer(nn.Module):
    """Post-LN transformer layer (Devlin et al. 2019): x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.n_head = config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.fc = nn.Linear(H, config.intermediate_size)
        self.proj = nn.Linear(config.intermediate_size, H)
        self.mlp_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.attn_dropout = config.attention_probs_dropout_prob
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.size()
        q, k, v = (lin(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, H)
        x = self.attn_norm(x + self.dropout(self.attn_out(y)))
        h = self.proj(F.gelu(self.fc(x)))  # exact (erf) GELU, as HF's "gelu"
        return self.mlp_norm(x + self.dropout(h))


class BertEncoder(nn.Module):

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) token ids, attention_mask (B, T) 1 = real token -> hidden states (B, T, H)."""
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: SDPA's unmasked kernels are faster
        mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(idx)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class BertForTokenClassification(nn.Module):
    """Encoder + dropout + linear head, one logit vector per sub-token (Devlin et al. 2019, §4.3)."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.bert = BertEncoder(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # BERT's init: N(0, 0.02) weights, zero biases, unit LayerNorm
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.dropout(self.bert(idx, attention_mask)))  # (B, T, num_labels)

    @classmethod
    def from_hf(cls, path: str | Path, num_labels: int | None = None) -> "BertForTokenClassification":
        """Load a Hugging Face BERT folder (config.json + model.safetensors or pytorch_model.bin). The head
        is loaded when the folder holds one (a fine-tuned model), else freshly initialised."""
        path = Path(path)
        hf = json.loads((path / "config.json").read_text())
        num_labels = num_labels or len(hf.get("id2label", {})) or 2
        model = cls(BertConfig.from_json(path / "config.json"), num_labels)
        sd = {}
        for k, v in _read_weights(path).items():
            name = _hf_to_ours(k)
            if name is not None:
                sd[name] = v
        if sd.get("classifier.weight", model.classifier.weight).shape != model.classifier.weight.shape:
            sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}  # a new label set: fresh head
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("classifier.")]
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not match a BERT encoder (missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}); is this a BERT checkpoint?")
        return model

    def save_hf(self, path: str | Path, id2label: dict[int, str], extra: dict | None = None) -> None:
        """Write config.json + model.safetensors in the HF BertForTokenClassification layout."""
        from safetensors.torch import save_file
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        c = self.bert.config
        cfg = dict(vars(c), architectures=["BertForTokenClassification"], model_type="bert", hidden_act="gelu",
                   position_embedding_type="absolute", id2label={str(i): lab for i, lab in id2label.items()},
                   label2id={lab: i for i, lab in id2label.items()}, **(extra or {}))
        (path / "config.json").write_text(json.dumps(cfg, indent=2))
        ours_to_hf = {_hf_to_ours(k): k for k in _hf_names(c.num_hidden_layers)}
        save_file({ours_to_hf[k]: v.contiguous() for k, v in self.state_dict().items()}, path / "model.safetensors")


# HF parameter names (BertModel / BertForTokenClassification) -> ours
_RENAMES = [("attention.self.query", "query"), ("attention.self.key", "key"), ("attention.self.value", "value"),
            ("attention.output.dense", "attn_out"), ("attention.output.LayerNorm", "attn_norm"),
            ("intermediate.dense", "fc"), ("output.dense", "proj"), ("output.LayerNorm", "mlp_norm"),
            ("encoder.layer.", "layers."), ("embeddings.LayerNorm", "embeddings.norm")]


def _hf_to_ours(k: str) -> str | None:
    if k.startswith("classifier."):
        return k
    k = k.removeprefix("bert.")
    if k.startswith("pooler.") or k.startswith("cls.") or k.endswith("position_ids"):
        return None  # the pooler and MLM head are not used for token classification
    k = k.replace(".gamma", ".weight").replace(".beta", ".bias")  # very old checkpoints
    for a, b in _RENAMES:
        k = k.replace(a, b)
    return "bert." + k


def _hf_names(n_layer: int) -> list[str]:
    emb = [f"bert.embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings",
                                                   "token_type_embeddings")]
    emb += ["bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"]
    per_layer = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"]
    layers = [f"bert.encoder.layer.{i}.{n}.{p}" for i in range(n_layer) for n in per_layer for p in ("weight", "bias")]
    return emb + layers + ["classifier.weight", "classifier.bias"]


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The one Hugging Face weight reader (hf.read_weights, shared with hf.load_gpt2), with the fix for
    --encoder in the message."""
    try:
        return _read_hf_weights(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; point --encoder at a HF BERT folder") from None
