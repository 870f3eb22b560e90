"""The sentence splitter, without an event loop: whole text, any split of it, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioagent.sentences import SentenceSplitter


def split(text: str) -> list[str]:
    s = SentenceSplitter()
    return s.push(text) + s.flush()


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Let me check that.It is sunny.", ["Let me check that.", "It is sunny."]),  # glued by the model
        ("Really?! Yes.", ["Really?!", "Yes."]),
        ("Wait... I see.", ["Wait...", "I see."]),
        ("It costs 3.5 dollars. Cheap!", ["It costs 3.5 dollars.", "Cheap!"]),
        ("Ask Dr. Smith. He knows.", ["Ask Dr. Smith.", "He knows."]),
        ("Fruit, e.g. apples, is good. Yes.", ["Fruit, e.g. apples, is good.", "Yes."]),
        ("Big cities, e.g. Paris and Rome, are busy.", ["Big cities, e.g. Paris and Rome, are busy."]),
        ("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
        ("The U.S.A. is large. Yes.", ["The U.S.A. is large.", "Yes."]),
        ("See example.com for more.", ["See example.com for more."]),
        ("Room No. 5 is free. Go.", ["Room No. 5 is free.", "Go."]),
        ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),
        ("First: the plan; second, the rest.", ["First:", "the plan;", "second, the rest."]),
        ("Version 2.0 is out.", ["Version 2.0 is out."]),
        ("approx. five minutes. Fine.", ["approx. five minutes.", "Fine."]),
        ("No punctuation at all", ["No punctuation at all"]),
        ("   ", []),
        ("Mr.Smith is here.", ["Mr.Smith is here."]),
        ("Wow! that hurt.", ["Wow!", "that hurt."]),
        ("It is 10:30 now.", ["It is 10:30 now."]),
    ],
)
def test_sentences(text: str, sentences: list[str]) -> None:
    assert split(text) == sentences


def test_a_sentence_comes_out_as_soon_as_it_is_certain() -> None:
    s = SentenceSplitter()
    assert s.push("Hello there.") == []  # "." could be "Dr." or "3.5": wait for what follows
    assert s.push(" ") == []
    assert s.push("How") == ["Hello there."]
    assert s.push(" are you? I") == ["How are you?"]
    assert s.flush() == ["I"]
    assert s.flush() == []


@given(st.data())
def test_any_split_of_the_stream_gives_the_same_sentences(data: st.DataObject) -> None:
    pieces = st.sampled_from([*"aZ .!?;:3e\"')\n", "Dr", "U.S.", "It", "that", "e.g.", " "])
    text = "".join(data.draw(st.lists(pieces, max_size=30)))
    whole = split(text)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    s = SentenceSplitter()
    out: list[str] = []
    prev = 0
    for cut in [*cuts, len(text)]:
        out += s.push(text[prev:cut])
        prev = cut
    out += s.flush()
    assert out == whole
    # Nothing is lost or added: the sentences are the text, less whitespace at the cuts.
    assert "".join(whole).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")
