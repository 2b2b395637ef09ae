"""The live side's first pass (issue 18): rows and the dump-order sha256 at C speed, no multiset;
what it settles and what it leaves to the second read."""

from __future__ import annotations

import pytest

from opstower_core.pg.digest import DumpFormatError, TableDigest, _CopyText, _OrderedText

ROWS = [b"1\tal\\\\ice\t2024-01-01 00:00:00+00", b"2\t\\N\t\\.x", b"3\tbob\\nnewline\t-infinity"]
TEXT = b"".join(r + b"\n" for r in ROWS)


def digest(cls, text: bytes, cut: int):
    c = cls()
    for i in range(0, len(text), cut):
        c.feed(text[i:i + cut])
    return c.result(need_terminator=False)


@pytest.mark.parametrize("cut", [1, 3, 7, len(TEXT)])
def test_first_pass_equals_the_full_digest_on_rows_and_order(cut):
    fast, full = digest(_OrderedText, TEXT, cut), digest(_CopyText, TEXT, cut)
    assert (fast.rows, fast.ordered) == (full.rows, full.ordered) == (3, full.ordered)
    assert fast.multiset is None and full.multiset is not None
    assert fast.compare(full) == full.compare(fast) == "equal"


def test_first_pass_cannot_tell_reordered_from_changed_and_says_different():
    full = digest(_CopyText, TEXT, 5)
    reordered = digest(_OrderedText, b"".join(r + b"\n" for r in reversed(ROWS)), 5)
    changed = digest(_OrderedText, TEXT.replace(b"bob", b"bib"), 5)
    missing = digest(_OrderedText, TEXT[: TEXT.index(b"3\t")], 5)
    assert reordered.compare(full) == changed.compare(full) == "different"  # the prover reads again
    assert digest(_CopyText, b"".join(r + b"\n" for r in reversed(ROWS)), 5).compare(full) == "equal-reordered"
    assert missing.rows == 2 and missing.compare(full) == "different"


def test_first_pass_rejects_a_stream_ending_inside_a_row():
    with pytest.raises(DumpFormatError):
        digest(_OrderedText, TEXT[:-1], 4)
    assert digest(_OrderedText, b"", 4) == TableDigest(0, digest(_CopyText, b"", 4).ordered, None)
