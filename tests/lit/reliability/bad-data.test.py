# Writes one directory of IDX files per malformed-data case into the
# directory given as the argument. Each directory holds the four files
# that idx() reads, 10 images of 28 x 28 pixels and their labels, and
# breaks one of them as the case's name says. bad-data.test runs bocbc
# on each and checks the message.
import gzip
import os
import struct
import sys

COUNT = 10
PIXELS = bytes((7 * i) % 256 for i in range(COUNT * 28 * 28))
LABELS = bytes(i % 10 for i in range(COUNT))


def idx(dims, payload, type_code=8, rank=None):
    rank = len(dims) if rank is None else rank
    header = struct.pack(">BBBB", 0, 0, type_code, rank)
    return header + b"".join(struct.pack(">I", d) for d in dims) + payload


def good_files():
    return {
        "train-images-idx3-ubyte": idx([COUNT, 28, 28], PIXELS),
        "train-labels-idx1-ubyte": idx([COUNT], LABELS),
        "t10k-images-idx3-ubyte": idx([COUNT, 28, 28], PIXELS),
        "t10k-labels-idx1-ubyte": idx([COUNT], LABELS),
    }


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
GZ = ".gz"

deflated = gzip.compress(idx([COUNT, 28, 28], PIXELS), mtime=0)
corrupt = bytearray(deflated)
for i in range(30, 60):
    corrupt[i] ^= 0x5A
bad_crc = bytearray(deflated)
bad_crc[-8] ^= 0xFF
labels_200 = bytearray(LABELS)
labels_200[5] = 200
labels_12 = bytearray(LABELS)
labels_12[9] = 12

# name -> {file name: contents}, replacing or adding to the good files;
# None removes the file, and a dict makes a directory of that name.
CASES = {
    "magic-text": {TRAIN_IMAGES: b"hello, world\n" * 10},
    "magic-gzip-text": {TRAIN_IMAGES: None, TRAIN_IMAGES + GZ: gzip.compress(b"hello" * 9, mtime=0)},
    "type-f32": {TRAIN_IMAGES: idx([COUNT, 28, 28], PIXELS, type_code=0x0D)},
    "rank-0": {TRAIN_IMAGES: idx([], b"", rank=0)},
    "rank-9": {TRAIN_IMAGES: idx([1] * 9, b"\0")},
    "empty-file": {TRAIN_IMAGES: b""},
    "header-3-bytes": {TRAIN_IMAGES: b"\0\0\x08"},
    "header-dims-cut": {TRAIN_IMAGES: idx([COUNT, 28, 28], b"")[:10]},
    "data-truncated": {TRAIN_IMAGES: idx([COUNT, 28, 28], PIXELS[:784])},
    "data-trailing": {TRAIN_IMAGES: idx([COUNT, 28, 28], PIXELS + b"extra")},
    "dims-huge": {TRAIN_IMAGES: idx([65536, 65536, 65536], b"")},
    "images-rank-1": {TRAIN_IMAGES: idx([COUNT], LABELS)},
    "labels-rank-2": {TRAIN_LABELS: idx([COUNT, 1], LABELS)},
    "count-mismatch": {TRAIN_LABELS: idx([COUNT - 1], LABELS[:-1])},
    "no-samples": {TRAIN_IMAGES: idx([0, 28, 28], b""), TRAIN_LABELS: idx([0], b"")},
    "zero-pixels": {TRAIN_IMAGES: idx([COUNT, 0, 28], b"")},
    "label-out-of-range": {TRAIN_LABELS: idx([COUNT], bytes(labels_200))},
    "test-label-out-of-range": {TEST_LABELS: idx([COUNT], bytes(labels_12))},
    "gzip-truncated": {TRAIN_IMAGES: None, TRAIN_IMAGES + GZ: deflated[: len(deflated) // 2]},
    "gzip-corrupt": {TRAIN_IMAGES: None, TRAIN_IMAGES + GZ: bytes(corrupt)},
    "gzip-bad-crc": {TRAIN_IMAGES: None, TRAIN_IMAGES + GZ: bytes(bad_crc)},
    "gzip-no-trailer": {TRAIN_IMAGES: None, TRAIN_IMAGES + GZ: deflated[:-8]},
    "file-missing": {TEST_LABELS: None},
    "directory-for-file": {TRAIN_LABELS: {}},
}


def main():
    out = sys.argv[1]
    for name, changes in CASES.items():
        files = good_files()
        files.update(changes)
        directory = os.path.join(out, name)
        os.makedirs(directory)
        for file_name, contents in files.items():
            path = os.path.join(directory, file_name)
            if contents is None:
                continue
            if isinstance(contents, dict):
                os.makedirs(path)
                continue
            with open(path, "wb") as f:
                f.write(contents)


if __name__ == "__main__":
    main()
