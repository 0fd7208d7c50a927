"""A procedural language for `lm-mini`: three tasks whose answer comes from known prompt tokens.

Each example is a prompt, one answer token and the prompt positions the answer comes from
(`sources`, known by construction), the text counterpart of `shapes`' pixel maps:

- `kv` (key-value retrieval): `a = 3 b = 7 c = 1 ; b ?` -> `7`. 2-6 pairs of distinct keys
  `a`..`h`; values may repeat, but the queried value appears once, so its source is the one
  position of that value.
- `index` (list indexing): `list 4 9 2 5 ; 3 ?` -> `2` (the 3rd item, counted from 1). 3-8
  items; the answered item appears once in the list; its source is its position.
- `brackets` (bracket matching): `( [ ( ) ] ?` -> `)`, the closer of the innermost unmatched
  opener. 2-8 brackets of three kinds, always a valid prefix with at least one opener unmatched;
  the source is that opener's position.

`length` is the task's size: pairs, items or brackets. Id 0 is `<unk>`, never in a prompt: the
baseline / removed-token id of `text.attribute`. `sample` is deterministic given its seed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxinterp.text.tokenizer import Tokenizer

KEYS = tuple("abcdefgh")
DIGITS = tuple("0123456789")
OPENERS, CLOSERS = ("(", "[", "{"), (")", "]", "}")
TASKS = ("kv", "index", "brackets")
LENGTHS = {"kv": (2, 6), "index": (3, 8), "brackets": (2, 8)}  # inclusive ranges
VOCAB = ("<unk>", *KEYS, *DIGITS, "=", ";", "?", *OPENERS, *CLOSERS, "list")
_ID = {t: i for i, t in enumerate(VOCAB)}


@dataclasses.dataclass(frozen=True)
class Example:
    """One prompt and its answer.

    Attributes:
      task: one of `TASKS`.
      prompt: token ids `[T]` (int32), ending in `?`.
      answer: the answer's token id (the token after the prompt).
      sources: prompt positions the answer comes from.
      text: the prompt's text (tokens joined by spaces).
    """

    task: str
    prompt: np.ndarray
    answer: int
    sources: tuple[int, ...]
    text: str

    @property
    def answer_text(self) -> str:
        return VOCAB[self.answer]


def vocabulary() -> list[str]:
    """The language's tokens, id i = `vocabulary()[i]`.

    Returns:
      29 tokens: `<unk>` (id 0), keys `a`..`h`, digits, `=`, `;`, `?`, brackets, `list`.
    """
    return list(VOCAB)


def tokenizer() -> Tokenizer:
    """The word-level tokenizer of `vocabulary()` (unknown words map to `<unk>`).

    Returns:
      A `text.Tokenizer`.
    """
    return Tokenizer(VOCAB, unk="<unk>")


def max_prompt_length() -> int:
    """The longest prompt of any task, in tokens.

    Returns:
      21 (`kv` with 6 pairs).
    """
    return max(_prompt_length(t, LENGTHS[t][1]) for t in TASKS)


def _prompt_length(task: str, length: int) -> int:
    return {"kv": 3 * length + 3, "index": length + 4, "brackets": length + 1}[task]


def _kv(rng, n):
    keys = rng.choice(len(KEYS), n, replace=False)
    q = int(rng.integers(n))
    value = int(rng.integers(10))
    others = [d for d in range(10) if d != value]
    values = [value if i == q else others[int(rng.integers(9))] for i in range(n)]
    words = [w for k, v in zip(keys, values) for w in (KEYS[k], "=", DIGITS[v])]
    words += [";", KEYS[keys[q]], "?"]
    return words, DIGITS[value], (3 * q + 2,)


def _index(rng, n):
    q = int(rng.integers(n))
    value = int(rng.integers(10))
    others = [d for d in range(10) if d != value]
    items = [value if i == q else others[int(rng.integers(9))] for i in range(n)]
    words = ["list", *(DIGITS[d] for d in items), ";", DIGITS[q + 1], "?"]
    return words, DIGITS[value], (q + 1,)


def _brackets(rng, n):
    while True:
        words, stack = [], []  # stack of (kind, position)
        for i in range(n):
            if stack and rng.random() < 0.5:
                words.append(CLOSERS[stack.pop()[0]])
            else:
                kind = int(rng.integers(3))
                words.append(OPENERS[kind])
                stack.append((kind, i))
        if stack:
            kind, pos = stack[-1]
            return words + ["?"], CLOSERS[kind], (pos,)


_MAKERS = {"kv": _kv, "index": _index, "brackets": _brackets}


def sample(seed: int, n: int, task: str | None = None, length: int | None = None) -> list[Example]:
    """`n` examples drawn from `seed` (the same seed gives the same examples).

    Args:
      seed: non-negative int.
      n: how many examples.
      task: one of `TASKS`, or None for a task drawn uniformly per example.
      length: the task's size (pairs, items or brackets, within `LENGTHS[task]`), or None for
        one drawn uniformly per example. Needs `task`.
    Returns:
      A list of `Example`s.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    if length is not None:
        if task is None:
            raise ValueError("length needs a task (its meaning differs per task)")
        lo, hi = LENGTHS[task]
        if not lo <= length <= hi:
            raise ValueError(f"{task} length must be in [{lo}, {hi}], got {length}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = TASKS[int(rng.integers(len(TASKS)))] if task is None else task
        size = int(rng.integers(LENGTHS[t][0], LENGTHS[t][1] + 1)) if length is None else length
        words, answer, sources = _MAKERS[t](rng, size)
        out.append(Example(t, np.array([_ID[w] for w in words], np.int32), _ID[answer],
                           sources, " ".join(words)))
    return out


def stack(examples: list[Example], width: int | None = None):
    """Prompts of any lengths as one right-padded batch (padding `<unk>` after the `?`; a causal
    decoder's logits at a prompt's last position do not see it).

    Args:
      examples: `Example`s.
      width: the padded length; default the longest prompt.
    Returns:
      `(ids [N, width] int32, last [N] int32, answers [N] int32)`: `last` is the position of each
      prompt's `?`, whose logits predict the answer.
    """
    width = max(len(e.prompt) for e in examples) if width is None else width
    ids = np.zeros((len(examples), width), np.int32)
    for i, e in enumerate(examples):
        ids[i, :len(e.prompt)] = e.prompt
    last = np.array([len(e.prompt) - 1 for e in examples], np.int32)
    return ids, last, np.array([e.answer for e in examples], np.int32)


def batches(seed: int, size: int, start: int = 0):
    """An endless stream of training batches of mixed tasks, batch k drawn from
    `sample(seed + k, size)` and padded to `max_prompt_length()` (one shape throughout).

    Args:
      seed: the first batch's seed; batch k uses seed + k.
      size: examples per batch.
      start: the first k (to resume).
    Returns:
      An iterator of `stack(...)` triples.
    """
    width = max_prompt_length()
    k = start
    while True:
        yield stack(sample(seed + k, size), width)
        k += 1
