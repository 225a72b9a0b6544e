"""What an HTTP request's body becomes: read within its bound (413 beyond), an infer body parsed into tensors
(small JSON on the event loop, large JSON in a worker process), or the image of an upload (multipart or raw).

Large JSON bodies are parsed in a worker process (:class:`BodyParser`): ``json.loads`` holds the GIL for the
whole call, so in a thread a 20 MB body would still stall every other request, the health probes included.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from . import protocol
from .failures import ServeError
from .heap import trim_memory

#: JSON bodies up to this size are parsed on the event loop (a few milliseconds); larger ones in the parser
#: process. Binary tensors after a small JSON header are views of the body and cost nothing to parse.
INLINE_JSON_BYTES = 256 << 10


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (declared or streamed). The time it may take
    is bounded by ``DrainGuard`` (``limits.body_timeout_s``, then 408) for every route at once."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServeError(413, f"the request body is {int(declared):,} bytes, more than the {limit:,} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"the request body is more than the {limit:,} bytes allowed")
        chunks.append(chunk)
    return b"".join(chunks)


class BodyParser:
    """Infer request bodies -> :class:`protocol.InferRequest`: small JSON on the event loop, large JSON in one
    worker process (spawned on first use; it imports only ``trtinfer.serve.protocol``), so a large body never
    holds this process's GIL. Its memory (12-14 times the JSON's size as Python objects) is the worker's, given
    back after each request; what comes back is the arrays' data. ``close()`` stops the worker (idempotent)."""

    def __init__(self, inline_bytes: int = INLINE_JSON_BYTES) -> None:
        self.inline_bytes = inline_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    async def parse(self, body: bytes, header_length: str | None,
                    max_bytes_elements: int | None) -> protocol.InferRequest:
        if _json_bytes(body, header_length) <= self.inline_bytes:
            return protocol.parse_infer_request(body, header_length, max_bytes_elements)
        pool = self._started()
        try:
            return await asyncio.wrap_future(pool.submit(protocol.parse_in_worker, body, header_length,
                                                         max_bytes_elements))
        except BrokenProcessPool:  # the worker died (killed for memory?): the next request starts a new one
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ServeError(503, "the JSON parser process ended while parsing this request (out of memory?); "
                                  "retry, or send the tensors as binary data", {"Retry-After": "1"}) from None

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=protocol.parser_process_init)
                # The worker starts with the first task. A spawned process re-runs the parent's __main__ (a
                # user's script, perhaps without the __main__ guard, would start a second server): hide it, so
                # the worker imports only trtinfer.serve.protocol.
                main = sys.modules["__main__"]
                sys.modules["__main__"] = types.ModuleType("__main__")
                try:
                    pool.submit(trim_memory)
                finally:
                    sys.modules["__main__"] = main
                self._pool = pool
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _json_bytes(body: bytes, header_length: str | None) -> int:
    """The size of the body's JSON part (0 for a malformed header: the inline parse refuses it)."""
    if header_length is None:
        return len(body)
    try:
        return min(protocol.header_length_value(header_length), len(body))
    except protocol.ProtocolError:
        return 0


async def read_upload(request: Request, limit: int) -> bytes:
    """The image of a predict request: a multipart file field, or the raw body."""
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise ServeError(400, "the request has no image: send it as the body or as a multipart file field")
        return body

    async def stream() -> Any:
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=16).parse()
    except Exception as exc:  # noqa: BLE001 -- a malformed multipart body is the client's
        raise ServeError(400, f"malformed multipart upload: {exc}") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise ServeError(400, "the multipart upload has no file field")
    try:
        return await files[0].read()
    finally:
        await form.close()
