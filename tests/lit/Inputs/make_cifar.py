#!/usr/bin/env python3
"""make_cifar.py - write a small CIFAR-10 directory for tests.

  make_cifar.py DIR TRAIN TEST

Writes DIR/data_batch_1.bin with TRAIN records and DIR/test_batch.bin
with TEST records. Each image is noise plus a bright square whose corner
depends on the label, so a small model can learn it.
"""
import os
import random
import sys


def record(rng, label):
    pixels = bytearray(rng.randrange(0, 64) for _ in range(3072))
    row, col = divmod(label, 4)
    for c in range(3):
        for y in range(row * 8, row * 8 + 8):
            for x in range(col * 8, col * 8 + 8):
                pixels[c * 1024 + y * 32 + x] = 220
    return bytes([label]) + bytes(pixels)


def main():
    out, train, test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    rng = random.Random(5)
    for name, count in (("data_batch_1.bin", train), ("test_batch.bin", test)):
        with open(os.path.join(out, name), "wb") as f:
            for i in range(count):
                f.write(record(rng, i % 10))


if __name__ == "__main__":
    main()
