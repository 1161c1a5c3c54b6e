"""The durable log: segmented, append-only, group-committed, reclaimed by reference counting.

Writes are group-committed: one writer job (on its own thread, so fsync never blocks the event
loop) writes every record queued since the previous commit, fsyncs once, then wakes all their
appenders. At start every record is verified (see :mod:`otel_topics.spool_format`); a torn tail
left by a crash is truncated and logged, never fatal. Space is reclaimed a whole segment at a time.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from otel_topics import metrics
from otel_topics.errors import Backpressure, PayloadTooLarge
from otel_topics.spool_format import (
    HEADER_SIZE,
    MAGIC,
    SEGMENT_RE,
    RecordRef,
    header,
    iter_records,
    pwrite_all,
    segment_name,
    valid_end,
)

log = logging.getLogger(__name__)

MIB = 1024 * 1024
RETRY_AFTER = 1.0


class _Segment:
    __slots__ = ("dependents", "fd", "live", "number", "size", "waiting", "written")

    def __init__(self, number: int, fd: int = -1, size: int = len(MAGIC), written: int = 0) -> None:
        self.number = number
        self.fd = fd  # opened by the writer thread for a new segment
        self.size = size  # logical end, pending records included
        self.written = written  # end of what is committed
        self.live = 0  # retained records + holds of guarding records
        self.waiting = 0  # append() calls not yet returned to their caller
        self.dependents: dict[int, int] | None = None  # segment -> holds to drop when this one goes


# (segment, ref, kind, payload, future of append() or None for append_nowait)
_Entry = tuple[_Segment, RecordRef, int, bytes, "asyncio.Future[RecordRef] | None"]


class DurableLog:
    """Append-only segmented log on disk with group commit and per-segment reference counts.

    Records start with 0 references; the caller ``retain()``s what it keeps, before its next
    ``await``. Nothing is deleted until ``collect()`` has been called once (after recovery has
    retained what it still needs); from then on a segment that is no longer the active one and
    whose count reached 0 is deleted.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_bytes: int = 64 * MIB,
        fsync: bool = True,
        commit_interval: float = 0.002,
        name: str = "spool",
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if segment_bytes <= len(MAGIC) + HEADER_SIZE:
            raise ValueError(
                f"segment_bytes must be larger than {len(MAGIC) + HEADER_SIZE}, got {segment_bytes}"
            )
        if commit_interval < 0:
            raise ValueError(f"commit_interval must be >= 0, got {commit_interval}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # a segment is reclaimed whole: keep several within the cap
        self.segment_bytes = max(min(segment_bytes, max_bytes // 4), 4096)
        self.fsync = fsync
        self.commit_interval = commit_interval
        self.name = name
        self._metrics = name == "spool"
        self._segments: dict[int, _Segment] = {}
        self._active: _Segment | None = None
        self._total = 0  # sum of segment sizes, pending included
        self._pending_bytes = 0
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._dir_fd = -1
        self._lock_fd = -1
        self._collecting = False
        self._closing = False
        self._last_batch = 0
        self.commits = 0

    # ---- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"otel-topics-{self.name}")
        loop = asyncio.get_running_loop()
        segments = await loop.run_in_executor(self._executor, self._open_and_scan)
        for seg in segments:
            self._segments[seg.number] = seg
            self._total += seg.size
        self._new_active()
        self._writer = asyncio.create_task(self._run_writer(), name=f"otel-topics-{self.name}-writer")
        if self._metrics:
            metrics.SPOOL_CAPACITY_BYTES.set(self.max_bytes)
            metrics.SPOOL_BYTES.set(self.bytes_on_disk)

    async def close(self) -> None:
        """Write and fsync everything appended so far, then close the files."""
        if self._writer is None:
            return
        self._closing = True
        self._wake.set()
        await self._writer
        self._writer = None
        assert self._executor is not None
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_files)
        self._executor.shutdown(wait=True)

    def _close_files(self) -> None:
        for seg in self._segments.values():
            if seg.fd >= 0:
                if self.fsync:
                    os.fdatasync(seg.fd)
                os.close(seg.fd)
                seg.fd = -1
        for fd in (self._dir_fd, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        self._dir_fd = self._lock_fd = -1

    def _open_and_scan(self) -> list[_Segment]:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise RuntimeError(
                f"{self.name} directory {self.directory} is in use by another process"
            ) from exc
        self._dir_fd = os.open(self.directory, os.O_RDONLY)
        found = sorted(int(m.group(1)) for p in self.directory.iterdir() if (m := SEGMENT_RE.match(p.name)))
        segments = []
        for number in found:
            seg = self._scan(number)
            if seg is not None:
                segments.append(seg)
        return segments

    def _path(self, number: int) -> Path:
        return self.directory / segment_name(number)

    def _scan(self, number: int) -> _Segment | None:
        path = self._path(number)
        fd = os.open(path, os.O_RDWR)
        size = os.fstat(fd).st_size
        if size < len(MAGIC):  # crashed while creating it: holds no record
            log.warning("%s: removing empty segment %s (%d bytes)", self.name, path, size)
            os.close(fd)
            path.unlink()
            return None
        data = os.pread(fd, size, 0)
        if data[: len(MAGIC)] != MAGIC:
            os.close(fd)
            bad = path.with_suffix(".corrupt")
            path.rename(bad)
            log.error("%s: %s is not a spool segment (bad magic); moved aside to %s", self.name, path, bad)
            return None
        pos = valid_end(data)
        if pos < size:
            log.warning(
                "%s: truncating torn or corrupt record at %s offset %d (%d bytes dropped)",
                self.name,
                path,
                pos,
                size - pos,
            )
            os.ftruncate(fd, pos)
            if self.fsync:
                os.fsync(fd)
        return _Segment(number, fd, size=pos, written=pos)

    def _new_active(self) -> None:
        number = max(self._segments, default=0) + 1
        seg = _Segment(number)
        self._segments[number] = seg
        self._total += seg.size
        old, self._active = self._active, seg
        if old is not None:
            self._maybe_delete(old)

    # ---- appending ----------------------------------------------------------------------------
    def _enqueue(self, kind: int, payload: bytes, fut: asyncio.Future[RecordRef] | None) -> RecordRef:
        if self._active is None or self._closing:
            raise RuntimeError(f"{self.name} at {self.directory} is not open")
        if not 0 <= kind <= 255:
            raise ValueError(f"record kind must be 0..255, got {kind}")
        need = HEADER_SIZE + len(payload)
        seg = self._active
        if seg.size + need > self.segment_bytes and seg.size > len(MAGIC):
            self._new_active()
            seg = self._active
        ref = RecordRef(seg.number, seg.size + HEADER_SIZE, len(payload))
        seg.size += need
        self._total += need
        self._pending_bytes += need
        self._pending.append((seg, ref, kind, payload, fut))
        self._wake.set()
        return ref

    def _check_room(self, size: int) -> None:
        need = HEADER_SIZE + size
        if need > self.max_bytes:
            raise PayloadTooLarge(
                f"record of {size} bytes is larger than {self.name} max_bytes={self.max_bytes}"
            )
        if self._total + need > self.max_bytes:
            raise Backpressure(
                f"{self.name} at {self.directory} is full "
                f"({self._total} of max_bytes={self.max_bytes} bytes used)",
                RETRY_AFTER,
            )

    async def append(self, kind: int, payload: bytes, *, cap: bool = True) -> RecordRef:
        """Return once the record is written (and fsynced when ``fsync``), with its group.

        Raises ``Backpressure`` when the log would exceed ``max_bytes`` (unless ``cap=False``).
        """
        if cap:
            self._check_room(len(payload))
        fut: asyncio.Future[RecordRef] = asyncio.get_running_loop().create_future()
        ref = self._enqueue(kind, payload, fut)
        seg = self._segments[ref.segment]
        seg.waiting += 1
        try:
            return await fut
        finally:
            seg.waiting -= 1
            asyncio.get_running_loop().call_soon(self._maybe_delete, seg)  # after the caller's retain()

    def append_nowait(self, kind: int, payload: bytes, *, guards: Iterable[RecordRef] = ()) -> RecordRef:
        """Append a small control record written with the next commit; not held to ``max_bytes``.

        ``guards``: records this one cancels (a tombstone, an ack). Its segment is kept while any
        of theirs still exists, so that a restart never sees them without it.
        """
        ref = self._enqueue(kind, payload, None)
        self.guard(ref, guards)
        return ref

    def guard(self, ref: RecordRef, guarded: Iterable[RecordRef]) -> None:
        """Keep ``ref``'s segment while any segment of ``guarded`` exists (re-done by recovery)."""
        own = self._segments.get(ref.segment)
        if own is None:
            return
        for number in {g.segment for g in guarded}:
            other = self._segments.get(number)
            if other is None or number == own.number:
                continue
            if other.dependents is None:
                other.dependents = {}
            other.dependents[own.number] = other.dependents.get(own.number, 0) + 1
            own.live += 1

    # ---- writer -------------------------------------------------------------------------------
    async def _run_writer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.commit_interval > 0 and self._last_batch > 1 and not self._closing:
                await asyncio.sleep(self.commit_interval)  # appenders are concurrent: gather more
            batch, self._pending = self._pending, []
            self._last_batch = len(batch)
            try:
                await loop.run_in_executor(self._executor, self._write_batch, batch)
            except Exception as exc:  # OSError mostly (disk full, I/O error)
                await self._fail(batch, exc)
                continue
            self._committed(batch)

    def _write_batch(self, batch: list[_Entry]) -> None:
        touched: dict[int, _Segment] = {}
        created = False
        i = 0
        while i < len(batch):
            seg = batch[i][0]
            if seg.fd < 0:
                seg.fd = os.open(self._path(seg.number), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                os.pwrite(seg.fd, MAGIC, 0)
                created = True
            touched[seg.number] = seg
            start = batch[i][1].offset - HEADER_SIZE
            bufs: list[bytes] = []
            while i < len(batch) and batch[i][0] is seg:
                _, _ref, kind, payload, _ = batch[i]
                bufs += (header(kind, payload), payload)
                i += 1
            pwrite_all(seg.fd, bufs, start)
        if self.fsync:
            for seg in touched.values():
                os.fdatasync(seg.fd)
            if created:
                os.fsync(self._dir_fd)

    def _committed(self, batch: list[_Entry]) -> None:
        touched: dict[int, _Segment] = {}
        for seg, ref, _, payload, fut in batch:
            seg.written = ref.offset + ref.length
            touched[seg.number] = seg
            self._pending_bytes -= HEADER_SIZE + len(payload)
            if fut is not None and not fut.done():
                fut.set_result(ref)
        for seg in touched.values():
            self._maybe_delete(seg)
        self.commits += 1
        if self._metrics:
            metrics.SPOOL_COMMITS.inc()
            metrics.SPOOL_BYTES.set(self.bytes_on_disk)

    async def _fail(self, batch: list[_Entry], exc: Exception) -> None:
        """A write failed: refuse this batch and what queued meanwhile, and continue in a new segment."""
        log.error("%s: write to %s failed: %r", self.name, self.directory, exc)
        metrics.ERRORS.labels("spool").inc()
        failed = batch + self._pending
        self._pending = []
        error = Backpressure(f"{self.name} write failed in {self.directory}: {exc}", RETRY_AFTER)
        for _, _, _, _, fut in failed:
            if fut is not None and not fut.done():
                fut.set_exception(error)
        truncate: list[tuple[int, int]] = []
        for seg in list(self._segments.values()):
            if seg.size <= seg.written:
                continue
            if seg.fd < 0:  # never created
                self._total -= seg.size
                del self._segments[seg.number]
                continue
            end = max(seg.written, len(MAGIC))
            self._total -= seg.size - end
            seg.size = seg.written = end
            truncate.append((seg.fd, end))
        self._pending_bytes = 0

        def _truncate() -> None:
            for fd, size in truncate:
                try:
                    os.ftruncate(fd, size)
                except OSError as err:
                    log.error("%s: could not truncate after a failed write: %s", self.name, err)

        await asyncio.get_running_loop().run_in_executor(self._executor, _truncate)
        self._active = None
        self._new_active()
        for seg in list(self._segments.values()):
            self._maybe_delete(seg)

    # ---- references ---------------------------------------------------------------------------
    def retain(self, ref: RecordRef, n: int = 1) -> None:
        seg = self._segments.get(ref.segment)
        if seg is None:
            raise KeyError(f"{self.name}: cannot retain {ref}: segment {ref.segment} was deleted")
        seg.live += n

    def release(self, ref: RecordRef, n: int = 1) -> None:
        seg = self._segments.get(ref.segment)
        if seg is None:
            raise KeyError(f"{self.name}: cannot release {ref}: segment {ref.segment} was deleted")
        if seg.live < n:
            raise ValueError(f"{self.name}: released {ref} more often than retained")
        seg.live -= n
        if seg.live == 0:
            self._maybe_delete(seg)

    def collect(self) -> None:
        """Delete every unreferenced inactive segment, and keep doing so from now on."""
        self._collecting = True
        for seg in list(self._segments.values()):
            self._maybe_delete(seg)

    def _maybe_delete(self, seg: _Segment) -> None:
        if (
            not self._collecting
            or seg is self._active
            or seg.live
            or seg.waiting
            or seg.written != seg.size
            or self._segments.get(seg.number) is not seg
        ):
            return
        del self._segments[seg.number]
        self._total -= seg.size
        fd, seg.fd = seg.fd, -1
        if self._executor is not None and self._writer is not None:
            self._executor.submit(self._unlink, fd, seg.number)  # off the event loop
        else:
            self._unlink(fd, seg.number)
        if self._metrics:
            metrics.SPOOL_BYTES.set(self.bytes_on_disk)
        for number, holds in (seg.dependents or {}).items():
            dep = self._segments.get(number)
            if dep is not None:
                dep.live -= holds
                self._maybe_delete(dep)

    def _unlink(self, fd: int, number: int) -> None:
        try:
            if fd >= 0:
                os.close(fd)
            self._path(number).unlink(missing_ok=True)
        except OSError as exc:
            log.error("%s: could not delete segment %s: %s", self.name, self._path(number), exc)

    # ---- reading ------------------------------------------------------------------------------
    def read(self, ref: RecordRef) -> bytes:
        """The payload of a committed record (blocking pread; fine from any thread)."""
        seg = self._segments.get(ref.segment)
        if seg is None or seg.fd < 0:
            raise KeyError(f"{self.name}: cannot read {ref}: segment {ref.segment} is gone")
        data = os.pread(seg.fd, ref.length, ref.offset)
        if len(data) != ref.length:
            raise OSError(f"{self.name}: short read of {ref} in {self._path(ref.segment)}")
        return data

    def replay(self) -> Iterator[tuple[RecordRef, int, bytes]]:
        """Every committed record of the live segments, in order: ``(ref, kind, payload)``."""
        for seg in sorted(self._segments.values(), key=lambda s: s.number):
            if seg.fd < 0 or seg.written <= len(MAGIC):
                continue
            data = os.pread(seg.fd, seg.written, 0)
            for kind, start, length in iter_records(data):
                yield RecordRef(seg.number, start, length), kind, data[start : start + length]

    # ---- accounting ---------------------------------------------------------------------------
    @property
    def bytes_on_disk(self) -> int:
        return self._total - self._pending_bytes

    @property
    def segments(self) -> list[int]:
        """Numbers of the segments that exist (the active one included)."""
        return sorted(self._segments)
