"""Micro-benchmark of the spool's group commit (not a test).

    python bench/spool_micro.py [--count 1000] [--size 102400] [--dir /path/on/the/target/disk]

Appends ``count`` payloads of ``size`` bytes, once one at a time (each waits for its own commit)
and once all concurrently (group commit), with fsync on and off, and prints appends/s and MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from otel_topics.spool import DurableLog


async def run(directory: Path, count: int, size: int, fsync: bool, concurrent: bool) -> None:
    log = DurableLog(directory, max_bytes=4 * count * size + (1 << 20), fsync=fsync, name="bench")
    await log.start()
    payloads = [os.urandom(64) * (size // 64) for _ in range(min(count, 16))]
    start = time.perf_counter()
    if concurrent:
        await asyncio.gather(*(log.append(1, payloads[i % len(payloads)]) for i in range(count)))
    else:
        for i in range(count):
            await log.append(1, payloads[i % len(payloads)])
    elapsed = time.perf_counter() - start
    commits = log.commits
    await log.close()
    mode = "concurrent" if concurrent else "sequential"
    print(
        f"fsync={'on ' if fsync else 'off'} {mode:10s}: {count / elapsed:10.0f} appends/s "
        f"{count * size / elapsed / 1e6:8.1f} MB/s  {commits} commits"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=100 * 1024)
    parser.add_argument("--dir", type=Path, default=None, help="parent directory (default: a temp dir)")
    args = parser.parse_args()
    print(f"{args.count} x {args.size} bytes")
    for fsync in (True, False):
        for concurrent in (False, True):
            with tempfile.TemporaryDirectory(dir=args.dir) as d:
                await run(Path(d), args.count, args.size, fsync, concurrent)


if __name__ == "__main__":
    asyncio.run(main())
