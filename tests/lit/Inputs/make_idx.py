#!/usr/bin/env python3
"""make_idx.py DIR SIZE COUNT - writes a small IDX data set of COUNT
square SIZE x SIZE greyscale images with labels 0..9 to DIR (the four
files that idx() reads). Tests use it when they need inputs of another
size than Fashion-MNIST's 28x28. The pixels are a fixed pseudo-random
sequence, so the files are the same on every run."""
import os
import struct
import sys


def write(path, dims, payload):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, len(dims)))
        f.write(struct.pack(">" + "I" * len(dims), *dims))
        f.write(payload)


def main(directory, size, count):
    os.makedirs(directory, exist_ok=True)
    state, pixels = 12345, bytearray()
    for _ in range(count * size * size):
        state = (1103515245 * state + 12345) % 2**31
        pixels.append(state >> 23)
    labels = bytes(i % 10 for i in range(count))
    for split in ("train", "t10k"):
        write(os.path.join(directory, f"{split}-images-idx3-ubyte"), (count, size, size), pixels)
        write(os.path.join(directory, f"{split}-labels-idx1-ubyte"), (count,), labels)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
