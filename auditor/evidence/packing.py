"""Bundle members hashed and deflated in worker threads, each as soon as it is final, while the
main thread renders the next report: hashlib and zlib release the GIL as they work, so a large
tenant's tens of megabytes of answers are packed on the other core.

Hashing has a worker of its own: the raw index and the OSCAL results need the digests long
before the archive needs its deflated members, and hashing is several times faster than
deflating, so a digest never waits behind a deflate. Deflating gets one worker on a small
machine: the main thread, evaluating and rendering, is the critical path, and more busy threads
than spare cores would only slow it down."""

from __future__ import annotations

import concurrent.futures
import os

from auditor.evidence.ziparchive import Packed, pack
from auditor.jsonutil import sha256_hex


def spare_cores() -> int:
    """Worker threads a background job may keep busy beside the main thread."""
    return max(1, (os.cpu_count() or 2) // 2)


class Packer:
    def __init__(self, workers: int | None = None) -> None:
        self._hasher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hash")
        self._deflater = concurrent.futures.ThreadPoolExecutor(
            workers or spare_cores(), thread_name_prefix="deflate"
        )
        self._hashes: dict[str, concurrent.futures.Future[str]] = {}
        self._packs: dict[str, concurrent.futures.Future[Packed]] = {}
        self._contents: dict[str, bytes] = {}

    def add(self, name: str, content: bytes) -> None:
        """A final member: hash and deflate it (again, if `name` was added with other content;
        not again for the same content). Safe to call from any thread."""
        if self._contents.get(name) is content:
            return
        self._contents[name] = content
        self._hashes[name] = self._hasher.submit(sha256_hex, content)
        self._packs[name] = self._deflater.submit(pack, name, content)

    def digests(self) -> dict[str, str]:
        """sha256 of every member added, once each is hashed."""
        return {name: job.result() for name, job in self._hashes.items()}

    def packed(self) -> dict[str, Packed]:
        return {name: job.result() for name, job in self._packs.items()}

    def close(self) -> None:
        for pool in (self._hasher, self._deflater):
            pool.shutdown(wait=False, cancel_futures=True)
