"""The procedural language of `text.language` and the shipped lm-mini trained on it."""

import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp.text import language

TEST_SEED = 2_000_000_000  # neither a training seed (from 0) nor an evaluation seed (1e9 + i)
OPENERS = {"(": ")", "[": "]", "{": "}"}


def check(words: list[str], task: str) -> tuple[str, tuple[int, ...]]:
    """The answer and its source positions, re-derived from the prompt's words alone (raises
    AssertionError on a malformed prompt)."""
    if task == "brackets":
        assert words[-1] == "?"
        stack = []
        for i, w in enumerate(words[:-1]):
            if w in OPENERS:
                stack.append(i)
            else:
                assert stack and OPENERS[words[stack.pop()]] == w, f"{w} closes nothing"
        assert stack, "no unmatched opener"
        return OPENERS[words[stack[-1]]], (stack[-1],)
    if task == "index":
        assert words[0] == "list" and words[-3] == ";" and words[-1] == "?"
        items, k = words[1:-3], int(words[-2])
        answer = items[k - 1]
        assert items.count(answer) == 1
        return answer, (k,)
    # kv, kv_open ("a = 3 ... ; b ?" / "... ; b"), kv_bare ("a 3 ... ; b")
    if task == "kv":
        assert words[-1] == "?"
        words = words[:-1]
    assert words[-2] == ";"
    body, query = words[:-2], words[-1]
    step = 2 if task == "kv_bare" else 3
    pairs = {body[i]: i + step - 1 for i in range(0, len(body), step)}
    assert len(pairs) * step == len(body), "repeated key"
    if step == 3:
        assert all(body[i + 1] == "=" for i in range(0, len(body), 3))
    answer = body[pairs[query]]
    assert body[step - 1::step].count(answer) == 1, "the queried value repeats"
    return answer, (pairs[query],)


def test_same_seed_same_examples_other_seed_other_examples():
    a, b, c = (language.sample(s, 60) for s in (5, 5, 6))
    assert [e.text for e in a] == [e.text for e in b]
    assert all(np.array_equal(x.prompt, y.prompt) and x.answer == y.answer and
               x.sources == y.sources for x, y in zip(a, b))
    assert sum(x.text != y.text for x, y in zip(a, c)) > 50
    assert {e.task for e in a} == set(language.TASKS)


@pytest.mark.parametrize("task", language.TRAINING_TASKS)
def test_answers_and_sources_agree_with_an_independent_checker(task):
    tok = language.tokenizer()
    sizes = set()
    for e in language.sample(11, 400, task):
        words = e.text.split()
        assert e.task == task and e.prompt.dtype == np.int32
        assert tok.tokens(e.prompt) == words and 0 not in e.prompt  # <unk> never in a prompt
        answer, sources = check(words, task)
        assert e.answer_text == answer and e.sources == sources, e.text
        if task == "brackets":
            assert OPENERS[words[e.sources[0]]] == e.answer_text
        else:
            assert [words[s] for s in e.sources] == [e.answer_text]
        sizes.add(len(words))
    lo, hi = language.LENGTHS[task]
    lengths = {t: {3 * n + 3 for n in range(lo, hi + 1)} for t in ("kv",)}
    lengths.update(index={n + 4 for n in range(lo, hi + 1)},
                   brackets={n + 1 for n in range(lo, hi + 1)},
                   kv_bare={2 * n + 2 for n in range(lo, hi + 1)},
                   kv_open={3 * n + 2 for n in range(lo, hi + 1)})
    assert sizes == lengths[task]  # every size drawn, none outside the range
    fixed = language.sample(3, 20, task, length=lo)
    assert {len(e.prompt) for e in fixed} == {min(lengths[task])}


def test_the_checker_catches_wrong_answers():
    """Mutations of correct examples must fail the checker (it is not vacuous)."""
    e = language.sample(1, 1, "brackets", length=5)[0]
    words = e.text.split()
    kinds = {"(": "[", "[": "{", "{": "(", ")": "]", "]": "}", "}": ")"}
    assert check([kinds.get(w, w) for w in words], "brackets")[0] == kinds[e.answer_text]
    with pytest.raises(AssertionError):
        check(["(", "]", "?"], "brackets")  # a closer of the wrong kind
    with pytest.raises(AssertionError):
        check(["(", ")", "?"], "brackets")  # nothing left open
    assert check("a = 3 b = 7 ; b ?".split(), "kv") == ("7", (5,))
    with pytest.raises(AssertionError):
        check("a = 3 a = 7 ; a ?".split(), "kv")
    assert check("list 4 9 2 5 ; 3 ?".split(), "index") == ("2", (3,))


def test_tokenizer_round_trip_and_vocabulary():
    tok = language.tokenizer()
    vocab = language.vocabulary()
    assert vocab[0] == "<unk>" and len(set(vocab)) == len(vocab) == len(tok)
    assert tok.encode("a=3 b=7 ; b ?") == tok.encode("a = 3 b = 7 ; b ?")
    for e in language.sample(2, 50, language.TRAINING_TASKS):
        assert tok.encode(e.text) == list(e.prompt)
        assert tok.decode(e.prompt) == e.text
    assert tok.encode("a = z") == [vocab.index("a"), vocab.index("="), 0]  # unknown -> <unk>
    with pytest.raises(ValueError):
        language.sample(0, 1, "sorting")
    with pytest.raises(ValueError):
        language.sample(0, 1, "kv", length=7)


def test_stack_pads_after_the_prompt():
    ex = language.sample(4, 10)
    ids, last, answers = language.stack(ex, 21)
    assert ids.shape == (10, 21) and ids.dtype == np.int32
    for row, i, a, e in zip(ids, last, answers, ex):
        assert np.array_equal(row[:i + 1], e.prompt) and not row[i + 1:].any() and a == e.answer


@pytest.fixture(scope="module")
def lm():
    return ji.load_model("lm-mini")


def test_shipped_lm_mini_records_and_tokenizer(lm):
    assert lm.arch == "lm-mini" and lm.tokenizer.vocab == tuple(language.vocabulary())
    extra = lm.extra
    lo, hi = extra["dataset"]["train_seeds"]
    assert not lo <= TEST_SEED <= hi + 200
    assert all(v >= 0.99 for v in extra["test"]["accuracy"].values())
    assert set(extra["test"]["accuracy"]) == set(language.TASKS)


@pytest.mark.parametrize("task", language.TASKS)
def test_shipped_lm_mini_answers_unseen_prompts(lm, task):
    ex = language.sample(TEST_SEED + language.TASKS.index(task), 200, task)
    ids, last, answers = language.stack(ex, language.max_prompt_length())
    logits, _ = lm(ids)
    pred = np.asarray(logits)[np.arange(len(ex)), last].argmax(-1)
    assert (pred == answers).mean() >= 0.99
    # greedy generation agrees on a same-length group (no padding)
    group = [e for e in ex if len(e.prompt) == len(ex[0].prompt)]
    out = np.asarray(ji.text.generate(lm, np.stack([e.prompt for e in group]), 1))
    assert np.array_equal(out[:, :-1], np.stack([e.prompt for e in group]))
    assert (out[:, -1] == np.array([e.answer for e in group])).mean() >= 0.95


def test_info_describes_the_shipped_lm_mini():
    from jaxinterp.cli.models import describe

    text = describe("lm-mini")
    assert "weights/lm-mini" in text or "_weights/lm-mini" in text, text
    assert "random initialization" not in text and "word-level, 29 tokens" in text
    assert "random initialization" in describe("gpt2").splitlines()[0]
