"""Tokenizers: a word-level one (lm-mini's, stored in its checkpoint) and Hugging Face
`tokenizer.json` files through the optional `tokenizers` package."""

from __future__ import annotations

import re
from pathlib import Path

WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks: "a=3 ;" -> a = 3 ;


class Tokenizer:
    """Maps text to token ids and back.

    Word-level (a vocabulary list; text split into words and single punctuation marks, so
    "a=3 b=7 ; b ?" and "a = 3 b = 7 ; b ?" are the same 9 tokens), or a Hugging Face
    `tokenizer.json` (`Tokenizer.from_file`, needs `pip install tokenizers`).

    Args:
      vocab: the tokens, id i = vocab[i] (word-level).
      unk: token that unknown words map to (must be in vocab); None: unknown words raise.
    """

    def __init__(self, vocab, unk: str | None = None, *, hf=None, source: str | None = None):
        self._hf, self.source = hf, source
        if hf is not None:
            self.vocab = tuple(hf.id_to_token(i) for i in range(hf.get_vocab_size()))
        else:
            self.vocab = tuple(vocab)
            if len(set(self.vocab)) != len(self.vocab):
                raise ValueError("the vocabulary has repeated tokens")
        self.unk = unk
        self._ids = {t: i for i, t in enumerate(self.vocab)}
        if unk is not None and unk not in self._ids:
            raise ValueError(f"unk token {unk!r} is not in the vocabulary")

    def __len__(self):
        return len(self.vocab)

    def __repr__(self):
        kind = f"tokenizer.json {self.source}" if self._hf is not None else "word-level"
        return f"Tokenizer({kind}, {len(self)} tokens)"

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; unknown words raise `ValueError` naming them (or map to unk)."""
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).ids)
        ids, unknown = [], []
        for w in WORD.findall(text):
            i = self._ids.get(w)
            if i is None:
                if self.unk is None:
                    unknown.append(w)
                    continue
                i = self._ids[self.unk]
            ids.append(i)
        if unknown:
            raise ValueError(f"words not in the vocabulary: {', '.join(map(repr, unknown[:10]))}")
        return ids

    def tokens(self, ids) -> list[str]:
        """The token strings of `ids` (as shown in heat maps)."""
        out = []
        for i in map(int, ids):
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"token id {i} is outside the vocabulary of {len(self.vocab)}")
            out.append(self.vocab[i])
        if self._hf is not None:  # byte-level BPE marks a leading space with "Ġ"
            out = [t.replace("Ġ", " ").replace("Ċ", "\n") for t in out]
        return out

    def decode(self, ids) -> str:
        """Text of `ids` (word-level: tokens joined by spaces)."""
        if self._hf is not None:
            return self._hf.decode([int(i) for i in ids])
        return " ".join(self.tokens(ids))

    def to_dict(self) -> dict:
        if self._hf is not None:
            return {"kind": "huggingface", "json": self._hf.to_str()}
        return {"kind": "word", "vocab": list(self.vocab), "unk": self.unk}

    @classmethod
    def from_dict(cls, d) -> "Tokenizer":
        if not isinstance(d, dict) or d.get("kind") not in ("word", "huggingface"):
            raise ValueError("tokenizer must be an object with kind 'word' or 'huggingface'")
        if d["kind"] == "huggingface":
            return cls(None, hf=_hf_module().Tokenizer.from_str(d["json"]), source="(stored)")
        vocab = d.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError("tokenizer.vocab must be a list of strings")
        return cls(vocab, d.get("unk"))

    @classmethod
    def from_file(cls, path) -> "Tokenizer":
        """A Hugging Face `tokenizer.json` (e.g. GPT-2's), via the `tokenizers` package."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(None, hf=_hf_module().Tokenizer.from_file(str(path)), source=path.name)


def _hf_module():
    try:
        import tokenizers
    except ImportError:
        raise ImportError("reading a Hugging Face tokenizer.json needs the `tokenizers` package: "
                          "pip install 'jaxinterp[text]'") from None
    return tokenizers
