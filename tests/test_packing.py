"""Bundle members are hashed and deflated in worker threads as they become final; the archive
holds exactly the content last given for each name."""

from __future__ import annotations

import hashlib
import zlib

from auditor.evidence.packing import Packer


def test_digests_and_packed_members_are_of_the_content_last_added() -> None:
    packer = Packer()
    try:
        first, second = b'{"answer": 1}' * 100, b'{"answer": 2}' * 100
        packer.add("raw/a.json", first)
        packer.add("raw/a.json", second)  # scrubbed again: the earlier content is dropped
        packer.add("raw/b.json", first)
        digests = packer.digests()
        assert digests == {
            "raw/a.json": hashlib.sha256(second).hexdigest(),
            "raw/b.json": hashlib.sha256(first).hexdigest(),
        }
        packed = packer.packed()
        assert packed["raw/a.json"].content is second
        assert zlib.decompress(packed["raw/a.json"].data, -15) == second
    finally:
        packer.close()


def test_the_same_content_is_not_packed_twice() -> None:
    packer = Packer()
    try:
        content = b"x" * 5000
        packer.add("m", content)
        job = packer.packed()["m"]
        packer.add("m", content)
        assert packer.packed()["m"] is job
    finally:
        packer.close()
