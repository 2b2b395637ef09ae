"""The live side's first pass (issue 18): rows and the dump-order sha256 at C speed, no multiset;
what it settles and what it leaves to the second read."""

from __future__ import annotations

import hashlib

import pytest

from opstower_core.pg.digest import (
    SEGMENT_ROWS,
    DumpFormatError,
    OrderedText,
    TableDigest,
    _CopyText,
    joined_digest,
)

ROWS = [b"1\tal\\\\ice\t2024-01-01 00:00:00+00", b"2\t\\N\t\\.x", b"3\tbob\\nnewline\t-infinity"]
TEXT = b"".join(r + b"\n" for r in ROWS)


def digest(cls, text: bytes, cut: int):
    c = cls()
    for i in range(0, len(text), cut):
        c.feed(text[i:i + cut])
    return c.result(need_terminator=False)


@pytest.mark.parametrize("cut", [1, 3, 7, len(TEXT)])
def test_first_pass_equals_the_full_digest_on_rows_and_order(cut):
    fast, full = digest(OrderedText, TEXT, cut), digest(_CopyText, TEXT, cut)
    assert (fast.rows, fast.ordered) == (full.rows, full.ordered) == (3, full.ordered)
    assert fast.multiset is None and full.multiset is not None
    assert fast.compare(full) == full.compare(fast) == "equal"


def test_first_pass_cannot_tell_reordered_from_changed_and_says_different():
    full = digest(_CopyText, TEXT, 5)
    reordered = digest(OrderedText, b"".join(r + b"\n" for r in reversed(ROWS)), 5)
    changed = digest(OrderedText, TEXT.replace(b"bob", b"bib"), 5)
    missing = digest(OrderedText, TEXT[: TEXT.index(b"3\t")], 5)
    assert reordered.compare(full) == changed.compare(full) == "different"  # the prover reads again
    assert digest(_CopyText, b"".join(r + b"\n" for r in reversed(ROWS)), 5).compare(full) == "equal-reordered"
    assert missing.rows == 2 and missing.compare(full) == "different"


def test_first_pass_rejects_a_stream_ending_inside_a_row():
    with pytest.raises(DumpFormatError):
        digest(OrderedText, TEXT[:-1], 4)
    assert digest(OrderedText, b"", 4) == TableDigest(0, digest(_CopyText, b"", 4).ordered, None)


# -- segments: one big table read in row ranges gives the digest of one read ----------------------

def reference(rows: list[bytes]) -> str:
    """The `ordered` digest spelled out: sha256 of each SEGMENT_ROWS rows' text, then of those."""
    seg = [hashlib.sha256(b"".join(r + b"\n" for r in rows[i:i + SEGMENT_ROWS])).digest()
           for i in range(0, len(rows), SEGMENT_ROWS)]
    return hashlib.sha256(b"".join(seg)).hexdigest()


MANY = [b"%d\t%s" % (i, b"x" * (i % 7)) for i in range(2 * SEGMENT_ROWS + 1234)]
MANY_TEXT = b"".join(r + b"\n" for r in MANY)


@pytest.mark.parametrize("cut", [4099, 65536, 1 << 20, len(MANY_TEXT)])
def test_both_sides_hash_segments_at_the_same_rows_in_any_chunking(cut):
    fast, full = digest(OrderedText, MANY_TEXT, cut), digest(_CopyText, MANY_TEXT, cut)
    assert fast.ordered == full.ordered == reference(MANY)
    assert fast.rows == full.rows == len(MANY)
    exact = MANY[:SEGMENT_ROWS]  # a table of exactly one segment has no empty second one
    assert digest(OrderedText, b"".join(r + b"\n" for r in exact), 1000).ordered == reference(exact)


def test_ranges_starting_on_segment_boundaries_join_to_the_single_read():
    whole = digest(OrderedText, MANY_TEXT, 1 << 16)
    parts = []
    for a, b in ((0, SEGMENT_ROWS), (SEGMENT_ROWS, len(MANY))):
        seg = OrderedText()
        seg.feed(b"".join(r + b"\n" for r in MANY[a:b]))
        parts.append(seg)
    assert joined_digest([h for p in parts for h in p.segment_hashes()]) == whole.ordered
    # A range that does not start on a boundary cannot be joined into the same digest.
    off = OrderedText()
    off.feed(b"".join(r + b"\n" for r in MANY[1:]))
    assert joined_digest(parts[0].segment_hashes()[:0] + off.segment_hashes()) != whole.ordered


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 64, 4099, 1 << 20])
def test_without_sums_the_dump_side_finds_the_same_rows_digest_and_end_marker(cut):
    """The dump side's cheap pass (no per-row sums): same rows and ordered digest, the end marker
    found wherever the chunks are cut, and what follows it handed back untouched."""
    stream = MANY_TEXT + b"\\.\n\n\nNEXT"
    for text in ((stream,) if cut >= 64 else ()) + (TEXT + b"\\.\nrest", b"\\.\nrest"):
        results = []
        for multiset in (True, False):
            c, after = _CopyText(multiset), b""
            for i in range(0, len(text), cut):
                after += c.feed(text[i:i + cut])
            results.append((c.result(need_terminator=True), after))
        (full, rest_full), (cheap, rest_cheap) = results
        assert (cheap.rows, cheap.ordered, cheap.multiset) == (full.rows, full.ordered, None)
        assert rest_cheap == rest_full == text[text.index(b"\\.\n") + 3:]
    with pytest.raises(DumpFormatError):
        c = _CopyText(False)
        c.feed(TEXT[:-1])
        c.result(need_terminator=True)
