"""
A word-level NER tagger: the backbones (our GPT, or the BERT encoder of bert.py), words -> chunks of sub-tokens
and back, and a fine-tuned model folder loaded for inference (Tagger, predict, predict_on_file). ner.py trains
and evaluates it.

Words, not sub-tokens, are the unit everywhere: one sub-token of a word carries its label (the others get
IGNORE_INDEX): the first for the bidirectional encoder (as nerblackbox, nerblackbox/modules/ner_training/
data_preprocessing/tools/input_examples_to_tensors.py), the last for the causal GPT backbone (the only position
that has seen the whole word), and a text longer than max_seq_length is cut into chunks at word boundaries that
overlap by chunk_overlap sub-tokens; each word's prediction comes from the chunk where it has the most context.

    tagger = Tagger.load("out-ner/model")
    predict(tagger, ["Anna bor i Lund."])  # [[{char_start, char_end, text, label, score}, ...]]
"""
import json
from pathlib import Path

import torch
from torch.nn import functional as F

import bert
import nerdata
import nertags
from bert import BertForTokenClassification, WordPieceTokenizer
from configurator import write_error
from documents import building, replace_folder
from losses import IGNORE_INDEX

# -----------------------------------------------------------------------------
# GPT backbone

class GPTWordTokenizer:
    """Our GPT tokenizer at word level: each word is encoded with a leading space (HF add_prefix_space=True)."""

    def __init__(self, spec: str):
        from tokenizer import get_tokenizer
        self.spec, self.tok = spec, get_tokenizer(spec)
        self.cls = self.sep = None  # a causal LM needs no [CLS]/[SEP]
        self.pad = self.tok.eot
        # Causal attention: a word's first piece (often a lone '▁' space piece) has not seen the word yet, so the
        # label sits on its last piece, the first position whose hidden state depends on the whole word.
        self.label_at = "last"

    def encode_word(self, word: str) -> list[int]:
        return self.tok.encode(" " + word)


class GPTForTokenClassification(torch.nn.Module):
    """Our GPT's final hidden states (after ln_f) + dropout + linear head. Causal: each word sees only its
    left context, so expect lower F1 than a bidirectional encoder of the same size."""

    def __init__(self, model_args: dict, num_labels: int, dropout: float = 0.1):
        super().__init__()
        from model import GPT, GPTConfig
        self.model_args = model_args
        self.gpt = GPT(GPTConfig(**model_args))
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(self.gpt.config.n_embd, num_labels)
        torch.nn.init.normal_(self.classifier.weight, std=0.02)
        torch.nn.init.zeros_(self.classifier.bias)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # right padding + causal attention: real positions never see the padding, so no mask is needed
        return self.classifier(self.dropout(self.gpt.hidden_states(idx)))  # (B, T, num_labels)


def load_gpt_backbone(out_dir: str, num_labels: int, tokenizer_spec: str):
    """A train.py run folder as a token-classification backbone, read by checkpoint.load_run (weights_only)."""
    from checkpoint import load_run
    run = load_run(out_dir, "cpu", tokenizer_spec or "")  # its own tokenizer; another one stops
    model = GPTForTokenClassification(run.checkpoint["model_args"], num_labels)
    model.gpt.load_state_dict(run.model.state_dict())
    return model, GPTWordTokenizer(run.tokenizer.name)


# -----------------------------------------------------------------------------
# words -> chunks of sub-tokens, and back

def encode(words: list[str], tokenizer, max_seq_length: int, chunk_overlap: int,
           label_ids: list[int] | None = None) -> list[dict]:
    """Chunks of at most max_seq_length ids, cut between words; consecutive chunks share about chunk_overlap
    sub-tokens. Each chunk: ids, labels (IGNORE_INDEX except at each word's label position: its first sub-token,
    or its last where tokenizer.label_at == 'last', as for the causal GPT backbone), first (each word's label
    position, or -1 if the word has no sub-token) and its word range [ws, we)."""
    specials = 0 if tokenizer.cls is None else 2
    room = max_seq_length - specials
    if not 0 <= chunk_overlap < room:
        raise ValueError(f"chunk_overlap={chunk_overlap} must be >= 0 and below max_seq_length - {specials} = {room}")
    pieces = [tokenizer.encode_word(w)[:room] for w in words]  # a word longer than a chunk keeps its start
    last = getattr(tokenizer, "label_at", "first") == "last"
    chunks, ws = [], 0
    while ws < len(words):
        we, n = ws, 0
        while we < len(words) and n + len(pieces[we]) <= room:
            n += len(pieces[we])
            we += 1
        ids = [] if tokenizer.cls is None else [tokenizer.cls]
        labels, first = [IGNORE_INDEX] * len(ids), []
        for w in range(ws, we):
            first.append((len(ids) + (len(pieces[w]) - 1 if last else 0)) if pieces[w] else -1)
            ids += pieces[w]
            labels += [IGNORE_INDEX] * len(pieces[w])
            if pieces[w] and label_ids is not None:
                labels[first[-1]] = label_ids[w]
        if tokenizer.sep is not None:
            ids.append(tokenizer.sep)
            labels.append(IGNORE_INDEX)
        chunks.append(dict(ids=ids, labels=labels, first=first, ws=ws, we=we))
        if we == len(words):
            break
        back, shared = we, 0
        while back - 1 > ws and shared + len(pieces[back - 1]) <= chunk_overlap:
            back -= 1
            shared += len(pieces[back])
        ws = back
    return chunks


def collate(chunks: list[dict], pad: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T = max(len(c["ids"]) for c in chunks)
    idx = torch.full((len(chunks), T), pad, dtype=torch.long)
    labels = torch.full((len(chunks), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(chunks), T), dtype=torch.long)
    for b, c in enumerate(chunks):
        n = len(c["ids"])
        idx[b, :n], labels[b, :n], mask[b, :n] = torch.tensor(c["ids"]), torch.tensor(c["labels"]), 1
    return idx.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def word_probs(model, tokenizer, sentences: list[list[str]], cfg: dict, device) -> list[torch.Tensor]:
    """Per sentence, (n_words, num_labels) probabilities; a word without sub-tokens gets all mass on 'O'.
    Overlapping chunks: the word takes the chunk where it is farthest from a chunk edge."""
    model.eval()
    items = [(s, c) for s, words in enumerate(sentences)
             for c in encode(words, tokenizer, cfg["max_seq_length"], cfg["chunk_overlap"])]
    items.sort(key=lambda it: len(it[1]["ids"]))  # length-sorted batches: little padding
    C = model.classifier.out_features
    out = [torch.zeros(len(w), C) for w in sentences]
    for p in out:
        p[:, 0] = 1.0  # label 0 is 'O'
    margin = [torch.full((len(w),), -1) for w in sentences]
    for i in range(0, len(items), cfg["batch_size"]):
        batch = items[i:i + cfg["batch_size"]]
        idx, mask, _ = collate([c for _, c in batch], tokenizer.pad, device)
        probs = F.softmax(model(idx, mask).float(), dim=-1).cpu()  # (B, T, C)
        for b, (s, c) in enumerate(batch):
            for k, pos in enumerate(c["first"]):
                w, m = c["ws"] + k, min(k, c["we"] - c["ws"] - 1 - k)
                if pos >= 0 and m > margin[s][w]:
                    out[s][w], margin[s][w] = probs[b, pos], m
    return out



def resolve_device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


# -----------------------------------------------------------------------------
# a fine-tuned model: load, predict

class Tagger:
    """A fine-tuned model folder loaded for inference: model, tokenizer, labels and settings."""

    def __init__(self, model, tokenizer, cfg: dict, device: str = "auto"):
        self.device = resolve_device(device)
        self.model, self.tokenizer, self.cfg = model.to(self.device).eval(), tokenizer, cfg
        self.labels: list[str] = cfg["labels"]
        self.scheme: str = cfg["scheme"]

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", batch_size: int = 32) -> "Tagger":
        path = Path(path)
        if not (path / "ner_config.json").is_file():
            raise FileNotFoundError(f"{path}/ner_config.json not found: --model must be a folder written by "
                                    f"`python ner.py train` (out_dir/model)")
        cfg = json.loads((path / "ner_config.json").read_text()) | {"batch_size": batch_size}
        if cfg["backbone"] == "bert":
            model, tok = BertForTokenClassification.from_hf(path), WordPieceTokenizer.from_dir(path)
        else:
            model = GPTForTokenClassification(cfg["model_args"], len(cfg["labels"]))
            model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
            tok = GPTWordTokenizer(cfg["tokenizer"])
        return cls(model, tok, cfg, device)

    def save(self, path: str | Path) -> None:
        """Write the model folder, built beside it and renamed into place (documents.building), so a failed
        save leaves `path` as it was. A failed write (a full disk) raises InputError naming the cause."""
        from safetensors import SafetensorError
        path = Path(path)
        try:
            with building(path) as tmp:
                self._write(tmp)
                replace_folder(tmp, path)
        except (OSError, RuntimeError, SafetensorError) as e:  # torch.save and safetensors report a full disk so
            raise write_error(e, path.parent, f"the model {path.name}") from None

    def _write(self, path: Path) -> None:
        keys = ("labels", "scheme", "max_seq_length", "chunk_overlap", "backbone", "tokenizer", "model_args")
        cfg = {k: self.cfg.get(k) for k in keys}
        if cfg["backbone"] == "bert":
            self.model.save_hf(path, dict(enumerate(self.labels)), {"max_seq_length": cfg["max_seq_length"]})
            self.tokenizer.save(path)
        else:
            torch.save(self.model.state_dict(), path / "model.pt")
        (path / "ner_config.json").write_text(json.dumps(cfg, indent=2))

    def tag(self, sentences: list[list[str]]) -> tuple[list[list[str]], list[list[float]]]:
        """Word lists -> predicted tags (in the model's scheme) and the probability of each tag."""
        probs = word_probs(self.model, self.tokenizer, sentences, self.cfg, self.device)
        tags = [[self.labels[i] for i in p.argmax(-1).tolist()] for p in probs]
        scores = [p.max(-1).values.tolist() for p in probs]
        return tags, scores


def predict(tagger: "Tagger | str | Path", texts: list[str] | str) -> list[list[dict]]:
    """Texts -> per text a list of {char_start, char_end, text, label, score} with int offsets into the original
    text. A stray I-X after O starts an entity (nerblackbox's autocorrect=True); score = mean word probability."""
    tagger = tagger if isinstance(tagger, Tagger) else Tagger.load(tagger)
    texts = [texts] if isinstance(texts, str) else texts
    spans = [bert.pretokenize(t) for t in texts]
    tags, scores = tagger.tag([[t[s:e] for s, e in sp] for t, sp in zip(texts, spans)])
    out = []
    for text, sp, tg, sc in zip(texts, spans, tags, scores):
        ents = []
        for label, a, b in nertags.entities(nertags.convert(tg, tagger.scheme, "bio")):
            s, e = sp[a][0], sp[b - 1][1]
            ents.append(dict(char_start=s, char_end=e, text=text[s:e], label=label, score=sum(sc[a:b]) / (b - a)))
        out.append(ents)
    return out


def read_texts(path: str | Path) -> list[dict]:
    """in.jsonl (standard JSONL; its tags are dropped) or in.txt (one text per line) -> one document per input
    line, blank lines included (text ''), each with its 1-based "line" number so outputs align with inputs."""
    if str(path).endswith(".jsonl"):
        docs = nerdata.read_jsonl(path, keep_blank=True)
        return [{"line": i + 1} | ({"text": ""} if d is None else {k: v for k, v in d.items() if k != "tags"})
                for i, d in enumerate(docs)]
    layout = nerdata.conll_layout_or_none(path)
    if layout is not None:  # token<TAB>tag lines: as text, the tag column would be tagged too
        raise ValueError(f"{path} is a CoNLL file (words in column {layout['token_column']}, NER tags in column "
                         f"{layout['tag_column']}), not text with one document per line: to score a model on it use "
                         f"`ner.py evaluate --data={path}`; to tag its sentences give them as text lines or standard "
                         f"JSONL")
    with open(path, encoding="utf-8") as f:
        return [{"line": i + 1, "text": line.rstrip("\r\n")} for i, line in enumerate(f)]


def predict_on_file(tagger: "Tagger | str | Path", input_path: str | Path, output_path: str | Path) -> list[dict]:
    """in.jsonl | in.txt -> standard JSONL with model tags {char_start, char_end, token, tag, score}, ready for
    pre-annotation (nerblackbox's predict_on_file)."""
    docs = read_texts(input_path)
    for d, ents in zip(docs, predict(tagger, [d["text"] for d in docs])):
        d["tags"] = [dict(char_start=e["char_start"], char_end=e["char_end"], token=e["text"], tag=e["label"],
                          score=e["score"]) for e in ents]
    nerdata.write_jsonl(docs, output_path)
    return docs
