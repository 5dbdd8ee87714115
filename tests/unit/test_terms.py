"""The index terms of a text (sessiondb.core.terms): the ASCII fast path gives exactly what the
character-by-character rule gives (the cut of sessiondb.core.query, the fold of
sessiondb.core.highlight), on text made to hit every edge of it."""

from __future__ import annotations

import random

import pytest

from benchmarks.corpus import Corpus
from sessiondb.core import terms as terms_module
from sessiondb.core.query import split_runs
from sessiondb.core.terms import _PIECES, fold_token, index_terms


def _reference(text: str) -> list[str]:
    """Every term of *text* in order, by the rule alone: each piece cut by split_runs, each run
    folded by fold_token."""
    return [
        term
        for piece in _PIECES.finditer(text)
        for run in split_runs(piece.group())
        for term in fold_token(run)
    ]


def _positions(terms: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pos, term in enumerate(terms, 1):
        out.setdefault(term, []).append(pos)
    return out


# ASCII controls that are neither whitespace nor punctuation stay inside a piece; letters with
# marks, ligatures, fullwidth and superscript digits, private use, CJK, ½ (folds into two runs).
_ALPHABET = (
    "abcXYZ019 \t\n.,:;-_/@+#'\"\\\x00\x01\x08\x0e\x1b\x7féÉçñ\u0301\u0308ßﬁＡ１²½\ue000東京的カ"
)


def _random_texts_get_the_reference_terms(alphabet: str, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        terms, n = index_terms(text)
        want = _reference(text)
        assert (terms, n) == (_positions(want), len(want)), repr(text)


def test_random_text_gets_the_reference_terms() -> None:
    _random_texts_get_the_reference_terms(_ALPHABET, 16)


@pytest.mark.parametrize("eager", [terms_module.EAGER_CHARS, 0])
def test_random_ascii_text_gets_the_reference_terms(
    eager: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ASCII paths: the whole text at once (up to EAGER_CHARS), and run by run."""
    monkeypatch.setattr(terms_module, "EAGER_CHARS", eager)
    _random_texts_get_the_reference_terms("".join(ch for ch in _ALPHABET if ch.isascii()), 17)


def test_a_long_ascii_text_read_run_by_run_gives_its_indexed_prefix() -> None:
    """Past EAGER_CHARS the runs are read one by one (and no further than the prefix): the
    terms are the bounded prefix's."""
    word = "lorem "
    text = word * (4 * terms_module.MAX_INDEXED_WORDS)
    assert len(text) > terms_module.EAGER_CHARS
    terms, n = index_terms(text)
    assert n == terms_module.MAX_INDEXED_WORDS
    assert terms == {"lorem": list(range(1, terms_module.MAX_INDEXED_WORDS + 1))}


def test_corpus_messages_get_the_reference_terms() -> None:
    corpus = Corpus(2000)
    for _, _, msgs in corpus.sessions():
        for _, content in msgs:
            want = _reference(content)
            assert index_terms(content) == (_positions(want), len(want))


def test_ascii_words_fold_to_lower_case() -> None:
    terms, n = index_terms("Retry the DEPLOY, retry x86_64 A1b2")
    assert terms == {"retry": [1, 4], "the": [2], "deploy": [3], "x86": [5], "64": [6], "a1b2": [7]}
    assert n == 7
