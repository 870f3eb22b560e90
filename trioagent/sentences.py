"""Cutting streamed LLM text into sentences for the TTS, as soon as each is complete.

How this works: text arrives in pieces of any size. A sentence ends at a run of ``.``, ``!``,
``?`` or ``…`` (with any closing quotes or brackets after it), or at ``;`` / ``:``, when what
follows shows it really is an end:

- whitespace, then a character that is not a lower-case letter ("Hi. How", "Why?! No");
  a ``.`` after a title or an initial ("Dr. Smith", "J. R. R. Tolkien", "No. 5") or after
  "e.g." and its kin is not an end;
- for ``;`` and ``:``, whitespace and anything;
- no space at all, then a capital letter, when the word before the ``.``/``!``/``?`` is an
  ordinary word ("that.It" from a model that glued two sentences; but "U.S.A", "Mr.Smith" and
  "3.5" stay whole).

A candidate end that cannot be decided yet (the text stops right after it) waits for the next
piece; `flush()` at the end of the stream gives whatever is left. Sans-IO, no trio.
"""

from __future__ import annotations

import re

__all__ = ["SentenceSplitter"]

# A "." after these (compared lower-case, without the dot) does not end a sentence even before a
# capital letter or a digit: titles, and abbreviations that are followed by an example or a name.
ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr prof sr jr st mt ft rev gen col capt lt sgt gov sen rep hon "
    "no nos vol fig figs art sec ch pp eq "
    "e.g i.e cf vs viz approx ca est inc ltd co corp dept univ jan feb mar apr jun jul aug sep sept oct nov dec".split()
)

# A candidate end: terminal punctuation, then closing quotes or brackets.
_END = re.compile(r"""(?:[.!?\u2026]+|[;:])["'\u201d\u2019)\]]*""")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


class SentenceSplitter:
    """Streamed text in, whole sentences out.

    >>> s = SentenceSplitter()
    >>> s.push("Dr. Smith is in. He")
    ['Dr. Smith is in.']
    >>> s.push(" costs 3.5 dollars")
    []
    >>> s.flush()
    ['He costs 3.5 dollars']
    """

    def __init__(self) -> None:
        self._buf = ""
        self._scan = 0  # where to look for the next candidate end

    def push(self, text: str) -> list[str]:
        """Add a piece of text; return the sentences it completes (stripped, non-empty)."""
        self._buf += text
        out: list[str] = []
        start = 0
        pos = self._scan
        while True:
            m = _END.search(self._buf, pos)
            if m is None:
                break
            verdict = self._is_end(m)
            if verdict is None:  # cannot tell yet: wait for more text
                break
            pos = m.end()
            if verdict:
                sentence = self._buf[start:pos].strip()
                if sentence:
                    out.append(sentence)
                start = pos
        # Next time, look again from the undecided candidate (or from the end of what was seen).
        self._scan = (m.start() if m is not None else len(self._buf)) - start
        self._buf = self._buf[start:]
        return out

    def flush(self) -> list[str]:
        """The rest of the text as a last sentence (the stream has ended)."""
        rest, self._buf, self._scan = self._buf.strip(), "", 0
        return [rest] if rest else []

    def _is_end(self, m: re.Match[str]) -> bool | None:
        buf = self._buf
        punct = m.group()
        after = m.end()
        if after >= len(buf):
            return None
        nxt = buf[after]
        if punct[0] in ";:":
            if nxt.isspace():
                return True
            return False
        before = _WORD_BEFORE.search(buf, 0, m.start())
        word = before.group(1) if before is not None else ""
        if not nxt.isspace():
            # "that.It": glued sentences. Not "U.S.A", "e.g.B", "3.5", "example.com".
            return (
                nxt.isupper()
                and len(word) >= 2
                and word.isalpha()
                and word[1:].islower()
                and word.lower() not in ABBREVIATIONS
            )
        # Whitespace: decide on the next visible character.
        rest = buf[after:].lstrip()
        if not rest:
            return None
        first = rest[0]
        if punct[0] in "!?\u2026" or punct.startswith(".."):
            return True
        if first.islower():
            return False  # "e.g. the", "approx. five", "etc. and"
        key = word.lower()
        if key in ABBREVIATIONS:
            return False
        if len(word) == 1 and word.isupper():
            return False  # an initial: "J. Smith"
        return True
