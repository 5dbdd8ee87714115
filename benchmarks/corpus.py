"""Deterministic corpus and query generator for the search benchmark.

The same seed always yields the same sessions, messages and queries, on any machine and Python
>= 3.10 (only ``random.Random`` with integer seeds and fixed tables are used), so sessiondb and
its peers are measured on identical data.

Messages: prose drawn from a Zipf-distributed vocabulary of made-up words, code lines with
identifiers and paths (``foo.bar``, ``x:y``, ``chat-send``, ``C++``, ``/usr/local/bin``, e-mail
addresses), about 5 % CJK text; each 200–2 000 UTF-8 bytes.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

ROLES = ("user", "assistant", "tool")
SOURCES = ("cli", "gateway", "editor", "cron")

_SYLLABLE_TEXT = (
    "ka ro mi ne to sa lu pe di fo ga hi ja ko le mu na po qu ri se ti vu wa xe yo za bar ben cor"
    " dal fen gor hul kin lor mar nor pix qua ros sul tor ulm ver wix yor zen"
)
_SYLLABLES = tuple(_SYLLABLE_TEXT.split())
# Common Chinese/Japanese characters; runs of them form the CJK messages.
_CJK = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对"
    "可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同"
    "三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定"
    "女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化"
    "由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应"
    "東京都に住んでいるのはとてもしいですがありますかでしょうかカタカナテストサーバーデータベース検索"
)
_TLDS = ("com", "org", "dev", "io")


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Query:
    kind: str
    text: str
    session_id: str
    seq: int


class Corpus:
    """``n_messages`` messages in about ``n_messages / 50`` sessions, fully determined by seed."""

    def __init__(self, n_messages: int, *, seed: int = 1, vocab_size: int = 30_000) -> None:
        self.n_messages = n_messages
        self.seed = seed
        rng = random.Random(seed)
        self.vocab = _vocabulary(vocab_size, rng)
        self._rank = {w: i for i, w in enumerate(self.vocab)}
        # Zipf (s = 1.07): a handful of words are everywhere, most are rare.
        self._cum = list(itertools.accumulate(1.0 / (r**1.07) for r in range(1, vocab_size + 1)))
        self.idents = [self._ident(rng) for _ in range(3_000)]
        # Session sizes 10..90 (mean 50), cut so that the total is exactly n_messages.
        self.sizes: list[int] = []
        total = 0
        while total < n_messages:
            size = min(rng.randint(10, 90), n_messages - total)
            self.sizes.append(size)
            total += size

    @property
    def n_sessions(self) -> int:
        return len(self.sizes)

    def session_id(self, index: int) -> str:
        return f"s{self.seed}-{index:06d}"

    def _word(self, rng: random.Random) -> str:
        x = rng.random() * self._cum[-1]
        return self.vocab[bisect.bisect_left(self._cum, x)]

    def _ident(self, rng: random.Random) -> str:
        a, b = rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES), rng.choice(_SYLLABLES) * 2
        return rng.choice(
            (
                f"{a}.{b}",
                f"{a}:{b}",
                f"{a}-{b}",
                f"{a}_{b}",
                f"{a.capitalize()}++",
                f"/usr/local/{a}/{b}",
                f"{a}@{b}.{rng.choice(_TLDS)}",
                f"{a}.{b}({rng.randint(0, 9)})",
            )
        )

    def _content(self, rng: random.Random) -> str:
        target = rng.randint(200, 2000)
        parts: list[str] = []
        size = 0
        cjk = rng.random() < 0.05
        while size < target:
            if cjk:
                piece = "".join(rng.choice(_CJK) for _ in range(rng.randint(8, 30))) + "。"
            elif rng.random() < 0.25:
                ident = rng.choice(self.idents)
                piece = f"    {self._word(rng)} = {ident} # {self._word(rng)} {self._word(rng)}\n"
            else:
                n = rng.randint(5, 16)
                piece = " ".join(self._word(rng) for _ in range(n)).capitalize() + ". "
            parts.append(piece)
            size += len(piece.encode())
        text = "".join(parts)
        data = text.encode()[:target]
        return data.decode("utf-8", "ignore").strip() or "empty"

    def session(self, index: int) -> tuple[str, str, list[tuple[str, str]]]:
        """(session_id, source, [(role, content), ...]) of session ``index``."""
        rng = random.Random(self.seed * 1_000_003 + index)
        source = SOURCES[index % len(SOURCES)]
        msgs = [(ROLES[i % 3 if i else 0], self._content(rng)) for i in range(self.sizes[index])]
        return self.session_id(index), source, msgs

    def sessions(self) -> Iterator[tuple[str, str, list[tuple[str, str]]]]:
        for index in range(self.n_sessions):
            yield self.session(index)

    def queries(self, n: int, *, seed: int = 7) -> list[Query]:
        """``n`` queries, each made from words of one message X (X's session and seq recorded)."""
        rng = random.Random(seed)
        kinds = ("word", "run", "punct", "cjk", "rare", "common")
        out: list[Query] = []
        while len(out) < n:
            index = rng.randrange(self.n_sessions)
            sid, _, msgs = self.session(index)
            seq = rng.randrange(len(msgs)) + 1
            content = msgs[seq - 1][1]
            kind = kinds[len(out) % len(kinds)]
            text = self._query_from(kind, content, rng)
            if text:
                out.append(Query(kind, text, sid, seq))
        return out

    def _query_from(self, kind: str, content: str, rng: random.Random) -> str | None:
        words = [w.strip(".,#=()") for w in content.split()]
        words = [w for w in words if w.isalpha() and w.isascii()]
        if kind == "cjk":
            runs = [r for r in content.replace("。", " ").split() if not r.isascii()]
            if not runs:
                return None
            run = rng.choice(runs)
            size = min(len(run), rng.randint(2, 5))
            start = rng.randrange(len(run) - size + 1)
            return run[start : start + size]
        if kind == "punct":
            tokens = [t for t in content.split() if any(c in t for c in ".:-_+/@") and len(t) > 3]
            tokens = [t.rstrip(".") for t in tokens if t.rstrip(".").isascii()]
            tokens = [t for t in tokens if any(c in t for c in ".:-_+/@")]
            return rng.choice(tokens) if tokens else None
        if not words:
            return None
        if kind == "run":
            size = rng.randint(2, 4)
            start = rng.randrange(max(1, len(words) - size + 1))
            return " ".join(words[start : start + size])
        rank = self._rank
        # Words outside the vocabulary (from code lines) count as the rarest; ties are broken
        # by the word itself, so that set order (hash seed) never changes the queries.
        ranked = sorted({w.lower() for w in words}, key=lambda w: (rank.get(w, len(rank)), w))
        if kind == "rare":
            return ranked[-1]
        if kind == "common":
            return ranked[0]
        return rng.choice(words)


__all__ = ["ROLES", "SOURCES", "Corpus", "Query"]
