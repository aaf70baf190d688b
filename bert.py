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

from model import _read_hf_weights

# -----------------------------------------------------------------------------
# word splitting (the BERT "basic tokenizer" rules, on the original text so offsets are exact)

def is_removed_char(c: str) -> bool:
    """Characters BERT's text cleaning deletes (NUL, U+FFFD, control/format chars except tab/newline)."""
    return c in "\x00\ufffd" or (c not in "\t\n\r" and unicodedata.category(c).startswith("C"))


def is_punctuation(c: str) -> bool:
    cp = ord(c)
    # all non-letter/number ASCII counts as punctuation in BERT ("$", "^", "`" too)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(c: str) -> bool:
    cp = ord(c)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
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
            c = "".join(x for x in unicodedata.normalize("NFD", c) if unicodedata.category(x) != "Mn")
        return c.lower() if self.lowercase else c

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
    """The one Hugging Face weight reader (model._read_hf_weights, shared with GPT.from_hf), with the fix for
    --encoder in the message."""
    try:
        return _read_hf_weights(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; point --encoder at a HF BERT folder") from None
