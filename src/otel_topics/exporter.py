"""The exporter stage: a queue per exporter, retries with backoff, a dead-letter file, and fan-out.

Each configured exporter is a :class:`QueuedExporter`: a :class:`~otel_topics.stages.Sender` (one backend)
behind its own queue (persistent on disk by default, :class:`MemoryQueue` when ``sending_queue`` is off).
:class:`Exporters` puts one request into the queue of every exporter of a pipeline; the receiver's ack
waits only for that (durable) put, never for the backend.

A queue entry is a 6-byte header (format version, signal, item count) followed by the serialized OTLP
export request, untouched: payloads stay bytes end to end and are parsed only where a backend format
needs it (debug, file, OTLP/JSON) or to count items on the rare dead-letter path.

Delivery: up to ``max_in_flight`` sends at once. When entries are waiting, those of one signal right
behind each other are sent as one request of up to ``max_batch_bytes`` (concatenated serialized
requests are a valid request, their merge: still no parsing); nothing waits to fill a batch.
A retryable failure keeps the item (unacknowledged, so still on disk) and retries it with jittered
exponential backoff, honouring the backend's retry-after; ``retry_max_elapsed=0`` retries forever, so a
long outage is ridden out without loss. A permanent refusal, an exhausted retry budget, or a retryable
failure with retries disabled writes the request to the dead-letter file (one JSON line per original
request; a refused batch is first split in halves, down to single requests, to find the culprit) and
then acknowledges it. Delivery is at-least-once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from otel_topics import metrics
from otel_topics.errors import Backpressure, ExportError, PermanentExportError
from otel_topics.exporter_queue import (
    HEADER,
    SIGNAL_CODES,
    MemoryQueue,
    QueueLike,
    count_items,
    pack_entry,
    peek_signal,
    unpack_entry,
)
from otel_topics.model import Signal
from otel_topics.stages import Sender

__all__ = [
    "Exporters",
    "MemoryQueue",
    "QueueLike",
    "QueuedExporter",
    "count_items",
    "pack_entry",
    "unpack_entry",
]

log = logging.getLogger(__name__)

_Bytes = bytes


class _Failure(NamedTuple):
    permanent: bool  # refused by the backend, else out of retries
    reason: str


# --- one exporter ------------------------------------------------------------------------------------
class QueuedExporter:
    """A sender behind a queue, with retries, backoff and a dead-letter file. See the module docstring."""

    def __init__(
        self,
        sender: Sender,
        *,
        queue: QueueLike,
        dead_letter_path: Path,
        retry_initial: float = 1.0,
        retry_max_interval: float = 30.0,
        retry_max_elapsed: float = 0.0,
        retry_enabled: bool = True,
        retry_multiplier: float = 2.0,
        max_in_flight: int = 4,
        max_batch_bytes: int = 1024 * 1024,
    ) -> None:
        if retry_initial <= 0:
            raise ValueError(f"retry_initial must be positive, got {retry_initial}")
        if retry_max_interval < retry_initial:
            raise ValueError(
                f"retry_max_interval ({retry_max_interval}) must be at least retry_initial ({retry_initial})"
            )
        if retry_max_elapsed < 0:
            raise ValueError(f"retry_max_elapsed must be >= 0 (0 = retry forever), got {retry_max_elapsed}")
        if retry_multiplier < 1:
            raise ValueError(f"retry_multiplier must be >= 1, got {retry_multiplier}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if max_batch_bytes < 0:
            raise ValueError(f"max_batch_bytes must be >= 0 (0 = no batching), got {max_batch_bytes}")
        self.sender = sender
        self.queue = queue
        self.name = sender.name
        self.dead_letter_path = Path(dead_letter_path)
        self.retry_initial = retry_initial
        self.retry_max_interval = retry_max_interval
        self.retry_max_elapsed = retry_max_elapsed
        self.retry_enabled = retry_enabled
        self.retry_multiplier = retry_multiplier
        self.max_in_flight = max_in_flight
        self.max_batch_bytes = max_batch_bytes
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()
        self._dead_letter_lock = asyncio.Lock()
        self._resume_at = 0.0  # a backend's retry-after holds back every send until then
        self._accepting = False
        self._closed = False
        self._queue_bytes = metrics.EXPORT_QUEUE_BYTES.labels(self.name)
        self._exported = {s: metrics.EXPORTED_ITEMS.labels(self.name, s) for s in SIGNAL_CODES}
        self._retryable = {s: metrics.EXPORT_FAILURES.labels(self.name, s, "retryable") for s in SIGNAL_CODES}
        self._permanent = {s: metrics.EXPORT_FAILURES.labels(self.name, s, "permanent") for s in SIGNAL_CODES}

    def __repr__(self) -> str:
        return f"QueuedExporter({self.name!r}, queued={len(self.queue)}, bytes={self.queue.bytes})"

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Open the queue and start delivering (entries left from a previous run go first)."""
        if self._runner is not None:
            return
        await self.queue.start()
        self._closed = False
        self._accepting = True
        self._queue_bytes.set(self.queue.bytes)
        self._runner = asyncio.create_task(self._run(), name=f"exporter {self.name}")

    async def put(self, signal: Signal, payload: _Bytes, items: int) -> None:
        """Queue one serialized export request; returns once it is durable. Raises Backpressure."""
        if not self._accepting:
            raise Backpressure(f"exporter {self.name!r} is not accepting data (not started or shutting down)")
        await self.queue.put(pack_entry(signal, payload, items))
        self._queue_bytes.set(self.queue.bytes)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, deliver what is queued until empty or ``timeout``, then close.

        Returns True when everything was delivered; what is left stays in the (persistent) queue.
        """
        self._accepting = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while (len(self.queue) or self._tasks) and self._runner is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                break
        done = not (len(self.queue) or self._tasks)
        if not done:
            log.warning(
                "exporter %s: drain timed out after %.1fs; %d requests (%d bytes) stay queued",
                self.name, timeout, len(self.queue), self.queue.bytes,
            )  # fmt: skip
        await self.close()
        return done

    async def close(self) -> None:
        """Stop at once: sends in progress are cancelled and their entries put back; close the queue."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.sender.close()
        finally:
            self._queue_bytes.set(self.queue.bytes)
            await self.queue.close()

    # --- delivery --------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                batch = await self._take()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as exc:  # e.g. the queue could not read an entry back from disk
                self._slots.release()
                metrics.ERRORS.labels("exporter").inc()
                log.error("exporter %s: cannot take from the queue (retrying in 1s): %s", self.name, exc)
                await asyncio.sleep(1.0)
                continue
            task = asyncio.create_task(self._deliver(batch))
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    async def _take(self) -> list[tuple[Any, _Bytes]]:
        """The next entry, plus the entries of the same signal right behind it, up to max_batch_bytes.

        Batches form only from a backlog (nothing waits to fill one), so they cost no latency and grow
        exactly when per-request overhead matters. Taking nothing back: one that does not fit is nacked.
        """
        first = await self.queue.get()
        batch = [first]
        signal = peek_signal(first[1])
        size = len(first[1])
        while signal is not None and size < self.max_batch_bytes:
            try:
                nxt = self.queue.get_nowait()
            except Exception as exc:  # the entries taken so far still go out; this one stays queued
                log.warning("exporter %s: cannot read a queued entry: %s", self.name, exc)
                break
            if nxt is None:
                break
            if peek_signal(nxt[1]) != signal or size + len(nxt[1]) > self.max_batch_bytes:
                self.queue.nack(nxt[0])
                break
            batch.append(nxt)
            size += len(nxt[1])
        return batch

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        self._progress.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            metrics.ERRORS.labels("exporter").inc()
            log.error("exporter %s: delivery task failed", self.name, exc_info=exc)

    async def _deliver(self, batch: list[tuple[Any, _Bytes]]) -> None:
        try:
            if len(batch) == 1:
                await self._deliver_one(batch[0][1])
            else:
                await self._deliver_many([entry for _, entry in batch])
        except BaseException:  # cancelled (close) or a bug: back at the front, never acknowledged on disk
            for ref, _ in reversed(batch):
                self.queue.nack(ref)
            raise
        for ref, _ in batch:
            self.queue.ack(ref)
        self._queue_bytes.set(self.queue.bytes)

    async def _deliver_one(self, entry: _Bytes) -> None:
        try:
            signal, items, payload = unpack_entry(entry)
        except ValueError as exc:
            await self._dead_letter(None, entry, 0, f"malformed queue entry: {exc}")
            return
        failure = await self._send(signal, items, payload)
        if failure is not None:
            await self._dead_letter(signal, payload, items, failure.reason)

    async def _deliver_many(self, entries: list[_Bytes]) -> None:
        """Entries of one signal as ONE request: concatenated serialized requests are their merge.

        A refused batch is split in halves and each half sent on its own, down to single requests: this
        finds the culprit of a refusal and gets under a backend's request size limit (HTTP 413, gRPC
        RESOURCE_EXHAUSTED) alike, each in a few steps.
        """
        signal = peek_signal(entries[0])
        assert signal is not None
        items = sum(HEADER.unpack_from(e)[2] for e in entries)
        payload = b"".join(memoryview(e)[HEADER.size :] for e in entries)
        failure = await self._send(signal, items, payload, quiet_permanent=True)
        if failure is None:
            return
        if failure.permanent:
            log.info(
                "exporter %s: a batch of %d %s requests was refused (%s); sending it in halves",
                self.name, len(entries), signal, failure.reason,
            )  # fmt: skip
            half = len(entries) // 2
            for part in (entries[:half], entries[half:]):
                await (self._deliver_one(part[0]) if len(part) == 1 else self._deliver_many(part))
            return
        for entry in entries:  # out of retries: one dead-letter line per original request
            _, n, body = unpack_entry(entry)
            await self._dead_letter(signal, body, n, failure.reason)

    async def _send(
        self, signal: Signal, items: int, payload: _Bytes, *, quiet_permanent: bool = False
    ) -> _Failure | None:
        """Send with retries. None when delivered, else why it was not (for the dead-letter file)."""
        loop = asyncio.get_running_loop()
        first_attempt = loop.time()
        attempt = 0
        while True:
            if (wait := self._resume_at - loop.time()) > 0:
                await asyncio.sleep(wait)
                continue
            attempt += 1
            try:
                await self.sender.send(signal, payload)
            except PermanentExportError as exc:
                self._permanent[signal].inc()
                if not quiet_permanent:
                    log.error("exporter %s: %s refused permanently: %s", self.name, signal, exc)
                return _Failure(True, str(exc))
            except Exception as exc:
                self._retryable[signal].inc()
                retry_after = exc.retry_after if isinstance(exc, ExportError) else None
                if not isinstance(exc, ExportError):
                    metrics.ERRORS.labels("exporter").inc()
                    log.error("exporter %s: unexpected error sending %s", self.name, signal, exc_info=exc)
                delay = self._backoff(attempt, retry_after)
                elapsed = loop.time() - first_attempt
                if not self.retry_enabled or (
                    self.retry_max_elapsed and elapsed + delay > self.retry_max_elapsed
                ):
                    why = "retries disabled" if not self.retry_enabled else f"gave up after {elapsed:.1f}s"
                    log.error("exporter %s: %s export failed (%s): %s", self.name, signal, why, exc)
                    return _Failure(False, f"{exc} ({why}, {attempt} attempts)")
                if retry_after is not None:
                    self._resume_at = max(self._resume_at, loop.time() + retry_after)
                level = logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG
                log.log(
                    level, "exporter %s: %s export failed (attempt %d), retrying in %.2fs: %s",
                    self.name, signal, attempt, delay, exc,
                )  # fmt: skip
                await asyncio.sleep(delay)
            else:
                self._exported[signal].inc(items)
                if attempt > 1:
                    log.info("exporter %s: %s delivered after %d attempts", self.name, signal, attempt)
                return None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        base = min(
            self.retry_initial * self.retry_multiplier ** min(attempt - 1, 64), self.retry_max_interval
        )
        delay = min(base * random.uniform(0.5, 1.5), self.retry_max_interval)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    async def _dead_letter(self, signal: Signal | None, payload: _Bytes, items: int, error: str) -> None:
        """Append the request to the dead-letter file (flushed and fsynced before the caller acks)."""
        if signal is not None and items <= 0:
            try:
                items = count_items(signal, payload)
            except Exception:  # undecodable: it still goes to the file, counted as zero items
                items = 0
        record = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "exporter": self.name,
            "signal": signal or "unknown",
            "items": items,
            "error": error,
            "payload_b64": base64.b64encode(payload).decode("ascii"),
        }
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        pause = 1.0
        while True:  # the entry is acknowledged only once it is in the file: never lose it
            try:
                async with self._dead_letter_lock:
                    await asyncio.to_thread(_append_line, self.dead_letter_path, line)
                break
            except OSError as exc:
                metrics.ERRORS.labels("exporter").inc()
                log.error(
                    "exporter %s: cannot write the dead-letter file %s (retrying in %.0fs): %s",
                    self.name, self.dead_letter_path, pause, exc,
                )  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, 60.0)
        metrics.DEAD_LETTERS.labels(self.name, signal or "unknown").inc(items)


def _append_line(path: Path, line: _Bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --- fan-out -----------------------------------------------------------------------------------------
class Exporters:
    """The exporters of one pipeline: ``put`` queues a request into every one of them.

    An exporter shared by several pipelines appears once. When one queue is full ``put`` raises
    Backpressure after the others have taken the request, so a client's retry can duplicate it in those
    (at-least-once delivery).
    """

    def __init__(self, exporters: Sequence[QueuedExporter]) -> None:
        unique: dict[int, QueuedExporter] = {}
        for e in exporters:
            unique.setdefault(id(e), e)
        self.exporters = list(unique.values())

    def __len__(self) -> int:
        return len(self.exporters)

    async def put(self, signal: Signal, payload: _Bytes, items: int) -> None:
        """Queue the request in every exporter; returns once all hold it durably. Raises Backpressure."""
        if len(self.exporters) == 1:
            await self.exporters[0].put(signal, payload, items)
            return
        results = await asyncio.gather(
            *(e.put(signal, payload, items) for e in self.exporters), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if not failures:
            return
        full = [f for f in failures if isinstance(f, Backpressure)]
        if len(full) == len(failures):
            raise Backpressure("; ".join(str(f) for f in full), retry_after=max(f.retry_after for f in full))
        raise next(f for f in failures if not isinstance(f, Backpressure))

    async def start(self) -> None:
        for e in self.exporters:
            await e.start()

    async def drain(self, timeout: float) -> bool:
        """Drain every exporter concurrently (same deadline); True when all queues emptied."""
        done = await asyncio.gather(*(e.drain(timeout) for e in self.exporters))
        return all(done)

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self.exporters))
