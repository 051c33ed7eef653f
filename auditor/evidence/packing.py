"""Bundle members hashed and deflated in worker threads, each as soon as it is final, while the
main thread renders the next report: hashlib and zlib release the GIL as they work, so a large
tenant's tens of megabytes of answers are packed on the other core."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from auditor.evidence.ziparchive import Packed, pack
from auditor.jsonutil import sha256_hex

T = TypeVar("T")


def hashed_and_packed(name: str, content: bytes) -> tuple[str, Packed]:
    return sha256_hex(content), pack(name, content)


class Packer:
    def __init__(self, workers: int = 2) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="bundle")
        self._jobs: dict[str, concurrent.futures.Future[tuple[str, Packed]]] = {}

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Any other work for the workers (the raw answers, as one job)."""
        return self._pool.submit(job)

    def add(self, name: str, content: bytes) -> None:
        """A final member: hash and deflate it."""
        self._jobs[name] = self._pool.submit(hashed_and_packed, name, content)

    def digests(self) -> dict[str, str]:
        """sha256 of every member added, once each is done."""
        return {name: job.result()[0] for name, job in self._jobs.items()}

    def packed(self) -> dict[str, Packed]:
        return {name: job.result()[1] for name, job in self._jobs.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
