"""Follow zstd frame and block headers (RFC 8878) over the compressed bytes.

python-zstandard's stream reader is the fastest way to decompress, but it ends quietly
when its input stops in the middle of a frame. Walking the block headers alongside it —
a few bytes per 128 KiB block — tells a complete stream from a truncated one.
"""

from __future__ import annotations

ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MIN, _SKIPPABLE_MAX = 0x184D2A50, 0x184D2A5F


class ZstdFrameWalker:
    def __init__(self) -> None:
        self._need = 4  # bytes the current header field needs
        self._state = "magic"
        self._hdr = bytearray()
        self._skip = 0  # body bytes to pass over
        self._checksum = False
        self.frames = 0
        self.error: str | None = None
        self.offset = 0

    def feed(self, data: bytes | memoryview) -> None:
        mv = memoryview(data)
        i, n = 0, len(mv)
        while i < n and self.error is None:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            take = min(self._need - len(self._hdr), n - i)
            self._hdr += mv[i:i + take]
            i += take
            if len(self._hdr) == self._need:
                self._field(bytes(self._hdr))
        self.offset += n

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need
        self._hdr.clear()

    def _field(self, b: bytes) -> None:
        st = self._state
        if st == "magic":
            magic = int.from_bytes(b, "little")
            if magic == ZSTD_MAGIC:
                self._expect("fhd", 1)
            elif _SKIPPABLE_MIN <= magic <= _SKIPPABLE_MAX:
                self._expect("skip_size", 4)
            else:
                self.error = "not a zstd frame (bad magic number)"
        elif st == "skip_size":
            self._skip = int.from_bytes(b, "little")
            self._expect("magic", 4)
        elif st == "fhd":
            fhd = b[0]
            fcs_flag, single, self._checksum, did_flag = fhd >> 6, (fhd >> 5) & 1, bool((fhd >> 2) & 1), fhd & 3
            rest = (0 if single else 1) + (0, 1, 2, 4)[did_flag] + ((1 if single else 0), 2, 4, 8)[fcs_flag]
            if rest:
                self._expect("hdr_rest", rest)
            else:
                self._expect("block", 3)
        elif st == "hdr_rest":
            self._expect("block", 3)
        elif st == "block":
            h = int.from_bytes(b, "little")
            last, btype, size = h & 1, (h >> 1) & 3, h >> 3
            if btype == 3:
                self.error = "corrupt zstd block header (reserved block type)"
                return
            self._skip = 1 if btype == 1 else size
            if last:
                if self._checksum:
                    self._expect("checksum", 4)
                else:
                    self.frames += 1
                    self._expect("magic", 4)
            else:
                self._expect("block", 3)
        elif st == "checksum":
            self.frames += 1
            self._expect("magic", 4)

    @property
    def complete(self) -> bool:
        """True when the bytes seen so far end exactly after a whole frame."""
        return self.error is None and self.frames > 0 and self._state == "magic" and not self._hdr and not self._skip
