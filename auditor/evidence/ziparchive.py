"""A deliberately plain zip format for bundles, written and read byte by byte.

Every header field of a bundle has one canonical value (one timestamp, fixed attributes, no extra
fields, no comments, no gaps between members), so the reader can require that every byte of the
archive is accounted for: a flipped byte in a header is caught as a non-canonical field, in
member data by the CRC and the sha256 in SHA256SUMS. Standard unzip tools read it as usual.
"""

from __future__ import annotations

import datetime as dt
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_LOCAL = 0x04034B50
_CENTRAL = 0x02014B50
_END = 0x06054B50
_LOCAL_FMT = "<IHHHHHIIIHH"
_CENTRAL_FMT = "<IHHHHHHIIIHHHHHII"
_END_FMT = "<IHHHHIIH"
_VERSION = 20  # 2.0: deflate
_MADE_BY = (3 << 8) | _VERSION  # Unix
_METHOD = 8  # deflate
_UTF8_FLAG = 0x800
_ATTRIBUTES = (0o100644 & 0xFFFF) << 16
MAX_MEMBER_SIZE = 2**31 - 1  # no zip64: bundles larger than this are not supported
_PIECE = 2**20  # how much is inflated at a time when reading


class ArchiveError(Exception):
    """The archive is not a canonical bundle zip. `member` names the file at fault, if any."""

    def __init__(self, member: str | None, problem: str) -> None:
        super().__init__(f"{member}: {problem}" if member else problem)
        self.member = member
        self.problem = problem


def dos_datetime(moment: dt.datetime) -> tuple[int, int]:
    utc = moment.astimezone(dt.UTC)
    year = max(1980, utc.year)
    dos_time = (utc.hour << 11) | (utc.minute << 5) | (utc.second // 2)
    dos_date = ((year - 1980) << 9) | (utc.month << 5) | utc.day
    return dos_time, dos_date


def _flags(name: str) -> int:
    return _UTF8_FLAG if not name.isascii() else 0


@dataclass(frozen=True)
class Packed:
    """A member's content deflated, with what its headers say of it."""

    content: bytes
    data: bytes
    crc: int


def pack(name: str, content: bytes) -> Packed:
    """Deflate a member (the costly part of writing an archive, so it can be done, and timed,
    before the archive is laid out)."""
    if len(content) > MAX_MEMBER_SIZE:
        raise ArchiveError(name, "larger than 2 GiB; bundles do not use zip64")
    # Level 3: three times as fast as the default 6 on a large tenant's answers, for a tenth
    # more bytes. At every level some bytes of a stream can change and still decode to the same
    # content (a few per bundle at 6, more at 1-3); such a change alters no evidence, and any
    # change that does alter a member fails its hash.
    compressor = zlib.compressobj(3, zlib.DEFLATED, -15)
    data = compressor.compress(content) + compressor.flush()
    return Packed(content, data, zlib.crc32(content) & 0xFFFFFFFF)


def build_zip(
    members: Iterable[tuple[str, bytes]],
    moment: dt.datetime,
    packed: dict[str, Packed] | None = None,
) -> bytes:
    """The canonical archive of (name, content) pairs, in the order given. `packed` holds
    members deflated already (used when the content is the same object)."""
    dos_time, dos_date = dos_datetime(moment)
    body = bytearray()
    central = bytearray()
    count = 0
    for name, content in members:
        ready = (packed or {}).get(name)
        if ready is None or ready.content is not content:
            ready = pack(name, content)
        encoded = name.encode("utf-8")
        packed_data, crc = ready.data, ready.crc
        offset = len(body)
        flags = _flags(name)
        body += struct.pack(
            _LOCAL_FMT,
            _LOCAL,
            _VERSION,
            flags,
            _METHOD,
            dos_time,
            dos_date,
            crc,
            len(packed_data),
            len(content),
            len(encoded),
            0,
        )
        body += encoded + packed_data
        central += struct.pack(
            _CENTRAL_FMT,
            _CENTRAL,
            _MADE_BY,
            _VERSION,
            flags,
            _METHOD,
            dos_time,
            dos_date,
            crc,
            len(packed_data),
            len(content),
            len(encoded),
            0,
            0,
            0,
            0,
            _ATTRIBUTES,
            offset,
        )
        central += encoded
        count += 1
    end = struct.pack(_END_FMT, _END, 0, 0, count, count, len(central), len(body), 0)
    return bytes(body + central + end)


@dataclass(frozen=True)
class Member:
    name: str
    data_offset: int
    compressed_size: int
    size: int
    crc: int


def _check(condition: bool, member: str | None, problem: str) -> None:
    if not condition:
        raise ArchiveError(member, problem)


def read_members(blob: bytes, moment: dt.datetime | None = None) -> list[Member]:
    """Parse and check the whole archive; ArchiveError on the first non-canonical byte.

    `moment`, when given, is the time every member's timestamp must carry.
    """
    end_size = struct.calcsize(_END_FMT)
    _check(len(blob) >= end_size, None, "too short to be a zip archive")
    (sig, disk, cd_disk, here, total, cd_size, cd_offset, comment) = struct.unpack(
        _END_FMT, blob[-end_size:]
    )
    _check(
        sig == _END,
        None,
        "the zip end record is not at the end of the file "
        "(trailing bytes, a comment, or a damaged end record)",
    )
    _check(disk == 0 and cd_disk == 0 and comment == 0, None, "the zip end record is not canonical")
    _check(here == total, None, "the zip end record's member counts disagree")
    _check(
        cd_offset + cd_size == len(blob) - end_size,
        None,
        "the zip central directory does not end where the end record begins",
    )

    expected_time = dos_datetime(moment) if moment else None
    members: list[Member] = []
    stamps: list[tuple[int, int]] = []
    cd_fixed = struct.calcsize(_CENTRAL_FMT)
    local_fixed = struct.calcsize(_LOCAL_FMT)
    pos = cd_offset
    running = 0
    for index in range(total):
        label = f"zip central directory entry {index + 1}"
        _check(pos + cd_fixed <= len(blob) - end_size, None, f"{label} runs past the directory")
        fields = struct.unpack(_CENTRAL_FMT, blob[pos : pos + cd_fixed])
        (
            sig,
            made_by,
            needed,
            flags,
            method,
            dos_time,
            dos_date,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            disk_start,
            internal,
            external,
            offset,
        ) = fields
        name_bytes = blob[pos + cd_fixed : pos + cd_fixed + name_len]
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(None, f"{label}: the file name is not UTF-8") from None
        _check(sig == _CENTRAL, name, "damaged zip central directory entry")
        _check(made_by == _MADE_BY and needed == _VERSION, name, "non-canonical zip version fields")
        _check(flags == _flags(name), name, "non-canonical zip flags")
        _check(method == _METHOD, name, "not deflate-compressed")
        if expected_time is not None:
            _check(
                (dos_time, dos_date) == expected_time,
                name,
                "zip timestamp differs from the run's start time in the manifest",
            )
        _check(extra_len == 0 and comment_len == 0, name, "zip entry carries extra data")
        _check(
            disk_start == 0 and internal == 0 and external == _ATTRIBUTES,
            name,
            "non-canonical zip attributes",
        )
        _check(offset == running, name, "zip entry is not where the directory says")

        # The local header must repeat the central directory entry exactly.
        _check(running + local_fixed <= cd_offset, name, "zip local header runs past the data")
        local = struct.unpack(_LOCAL_FMT, blob[running : running + local_fixed])
        expected_local = (
            _LOCAL,
            _VERSION,
            flags,
            method,
            dos_time,
            dos_date,
            crc,
            csize,
            usize,
            name_len,
            0,
        )
        _check(local == expected_local, name, "zip local header differs from the central directory")
        start = running + local_fixed
        _check(
            blob[start : start + name_len] == name_bytes,
            name,
            "zip local header names a different file",
        )
        data_offset = start + name_len
        _check(data_offset + csize <= cd_offset, name, "compressed data runs past the directory")
        members.append(Member(name, data_offset, csize, usize, crc))
        running = data_offset + csize
        pos += cd_fixed + name_len
        stamps.append((dos_time, dos_date))
    _check(
        pos == cd_offset + cd_size,
        None,
        "the zip central directory has a different size than recorded",
    )
    _check(running == cd_offset, None, "bytes between the last member and the zip directory")
    # Every member carries the one run timestamp; the odd one out is the damaged entry.
    if stamps:
        common = Counter(stamps).most_common(1)[0][0]
        for member, stamp in zip(members, stamps, strict=True):
            _check(stamp == common, member.name, "zip timestamp differs from the other members'")
    return members


def _inflate(blob: bytes, member: Member, limit: int) -> Iterator[bytes]:
    """One member's content a piece at a time, whatever its size. The stream must end exactly,
    inflate to the size the directory declares (never past it: reading stops there) and match
    the CRC; the checks of the whole come once the last piece is out."""
    _check(member.size <= limit, member.name, f"larger than the limit of {limit} bytes")
    decompressor = zlib.decompressobj(-15)
    packed = memoryview(blob)[member.data_offset : member.data_offset + member.compressed_size]
    size = crc = 0
    try:
        for start in range(0, len(packed), _PIECE):
            pending: bytes | memoryview = packed[start : start + _PIECE]
            while True:
                piece = decompressor.decompress(pending, _PIECE)
                pending = decompressor.unconsumed_tail
                size += len(piece)
                _check(size <= member.size, member.name, "size differs from the zip directory")
                crc = zlib.crc32(piece, crc)
                if piece:
                    yield piece
                if decompressor.eof or not (piece or pending):
                    break
            if decompressor.eof:
                _check(
                    not decompressor.unused_data and start + _PIECE >= len(packed),
                    member.name,
                    "compressed data has trailing bytes",
                )
                break
    except zlib.error as exc:
        raise ArchiveError(member.name, f"compressed data is damaged ({exc})") from exc
    _check(decompressor.eof, member.name, "compressed data is truncated")
    _check(size == member.size, member.name, "size differs from the zip directory")
    _check(crc & 0xFFFFFFFF == member.crc, member.name, "CRC-32 does not match")


def read_content(blob: bytes, member: Member, limit: int = MAX_MEMBER_SIZE) -> bytes:
    """Decompress one member, requiring the stream to end exactly and the CRC to match."""
    return b"".join(_inflate(blob, member, limit))


def check_content(blob: bytes, member: Member, limit: int = MAX_MEMBER_SIZE) -> None:
    """`read_content`'s checks, holding no more than a piece of the member at a time."""
    for _piece in _inflate(blob, member, limit):
        pass
