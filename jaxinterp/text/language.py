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

Two more tasks are training aids only (`TRAINING_TASKS`, not `TASKS`): `kv_bare`, `kv` without
`=` and `?` (`a 3 b 7 c 1 ; b` -> `7`), and `kv_open`, `kv` without `?` (`a = 3 b = 7 ; b` ->
`7`). Trained on `kv` alone, a small decoder stays on a plateau (answering any value of the
prompt) for 10,000+ steps; `kv_bare`, whose values follow their keys and whose query key is the
last token, is learned in a few hundred, and the two steps from it to `kv` then follow (see
`scripts/train_lm.py`).

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
TRAINING_TASKS = (*TASKS, "kv_bare", "kv_open")
LENGTHS = {"kv": (2, 6), "index": (3, 8), "brackets": (2, 8), "kv_bare": (2, 6),
           "kv_open": (2, 6)}  # inclusive ranges
VOCAB = ("<unk>", *KEYS, *DIGITS, "=", ";", "?", *OPENERS, *CLOSERS, "list")
_ID = {t: i for i, t in enumerate(VOCAB)}


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One prompt and its answer.

    Attributes:
      task: one of `TRAINING_TASKS`.
      prompt: token ids `[T]` (int32), ending in `?` (`kv_bare`, `kv_open`: in the query key).
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
        """The answer token."""
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
    return {"kv": 3 * length + 3, "index": length + 4, "brackets": length + 1,
            "kv_bare": 2 * length + 2, "kv_open": 3 * length + 2}[task]


def _kv(rng, n, form="kv"):
    keys = rng.choice(len(KEYS), n, replace=False)
    q = int(rng.integers(n))
    value = int(rng.integers(10))
    others = [d for d in range(10) if d != value]
    values = [value if i == q else others[int(rng.integers(9))] for i in range(n)]
    if form == "kv_bare":
        words = [w for k, v in zip(keys, values) for w in (KEYS[k], DIGITS[v])]
        return words + [";", KEYS[keys[q]]], DIGITS[value], (2 * q + 1,)
    words = [w for k, v in zip(keys, values) for w in (KEYS[k], "=", DIGITS[v])]
    words += [";", KEYS[keys[q]]] + (["?"] if form == "kv" else [])
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


_MAKERS = {"kv": _kv, "index": _index, "brackets": _brackets,
           "kv_bare": lambda rng, n: _kv(rng, n, "kv_bare"),
           "kv_open": lambda rng, n: _kv(rng, n, "kv_open")}


def sample(seed: int, n: int, task: str | tuple[str, ...] | None = None,
           length: int | None = None) -> list[Example]:
    """`n` examples drawn from `seed` (the same seed gives the same examples).

    Args:
      seed: non-negative int.
      n: how many examples.
      task: one of `TRAINING_TASKS`; a tuple of them, or None for `TASKS`, to draw each
        example's task uniformly from.
      length: the task's size (pairs, items or brackets, within `LENGTHS[task]`), or None for
        one drawn uniformly per example. Needs a single `task`.
    Returns:
      A list of `Example`s.
    """
    tasks = TASKS if task is None else (task,) if isinstance(task, str) else tuple(task)
    bad = [t for t in tasks if t not in TRAINING_TASKS]
    if bad or not tasks:
        raise ValueError(f"task must be one of {TRAINING_TASKS}, a tuple of them, or None; "
                         f"got {task!r}")
    if length is not None:
        if len(tasks) != 1:
            raise ValueError("length needs a single task (its meaning differs per task)")
        task = tasks[0]
        lo, hi = LENGTHS[task]
        if not lo <= length <= hi:
            raise ValueError(f"{task} length must be in [{lo}, {hi}], got {length}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        t = tasks[int(rng.integers(len(tasks)))] if len(tasks) > 1 else tasks[0]
        size = int(rng.integers(LENGTHS[t][0], LENGTHS[t][1] + 1)) if length is None else length
        words, answer, sources = _MAKERS[t](rng, size)
        out.append(Example(t, np.array([_ID[w] for w in words], np.int32), _ID[answer],
                           sources, " ".join(words)))
    return out


def stack(examples: list[Example], width: int | None = None):
    """Prompts of any lengths as one right-padded batch (`<unk>` after each prompt: a causal
    decoder's logits at a prompt's last position do not see it).

    Args:
      examples: `Example`s.
      width: the padded length; default the longest prompt.
    Returns:
      `(ids [N, width] int32, last [N] int32, answers [N] int32)`: `last` is the position of each
      prompt's last token, whose logits predict the answer.
    """
    width = max(len(e.prompt) for e in examples) if width is None else width
    ids = np.zeros((len(examples), width), np.int32)
    for i, e in enumerate(examples):
        ids[i, :len(e.prompt)] = e.prompt
    last = np.array([len(e.prompt) - 1 for e in examples], np.int32)
    return ids, last, np.array([e.answer for e in examples], np.int32)


def batches(seed: int, size: int, tasks: tuple[str, ...] = TRAINING_TASKS, start: int = 0):
    """An endless stream of training batches of mixed tasks, batch k drawn from
    `sample(seed + k, size, tasks)` and padded to `max_prompt_length()` (one shape throughout).

    Args:
      seed: the first batch's seed; batch k uses seed + k.
      size: examples per batch.
      tasks: the tasks each example's is drawn from (uniformly).
      start: the first k (to resume).
    Returns:
      An iterator of `stack(...)` triples.
    """
    width = max_prompt_length()
    k = start
    while True:
        yield stack(sample(seed + k, size, tasks), width)
        k += 1
