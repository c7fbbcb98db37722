#!/usr/bin/env python3
"""A producer process passes numpy arrays to a consumer process with no copy on the
way out and none on the way in: the producer builds each array directly in the
channel's ring (a loan), the consumer reads it where it lies (recv_ref), as a numpy
view over shared memory.

    python3 numpy_pipeline.py [ARRAYS]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time

import numpy as np

import shmkit

CHANNEL = "posix:/shmkit.example.frames"
SHAPE = (512, 512)  # 2 MiB of float64 per array
DTYPE = np.float64
NBYTES = int(np.prod(SHAPE)) * np.dtype(DTYPE).itemsize


def consumer(ready, count: int) -> None:
    with shmkit.Receiver.open(CHANNEL, timeout=10) as rx:
        ready.set()
        total = 0.0
        for i in range(count):
            with rx.recv_ref() as view:
                frame = np.frombuffer(view, dtype=DTYPE).reshape(SHAPE)  # no copy
                assert frame[0, 0] == i
                total += float(frame[-1, -1])
                del frame  # views must not outlive the block
        print(f"consumer: {count} arrays, checksum {total:.0f}")


def main(count: int) -> None:
    tx = shmkit.Sender.create(CHANNEL, capacity=8 * NBYTES)
    ready = mp.Event()
    proc = mp.Process(target=consumer, args=(ready, count))
    proc.start()
    ready.wait()
    start = time.perf_counter()
    for i in range(count):
        with tx.loan(NBYTES) as buf:
            frame = np.frombuffer(buf, dtype=DTYPE).reshape(SHAPE)  # the ring itself
            frame[:] = i  # written in place: this is the only pass over the bytes
            frame[-1, -1] = 1.0
            del frame
    tx.close()
    proc.join()
    took = time.perf_counter() - start
    print(f"producer: {count} arrays of {NBYTES >> 20} MiB in {took:.2f} s ({count * NBYTES / took / 1e9:.1f} GB/s)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
