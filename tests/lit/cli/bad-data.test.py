# Writes IDX files for 10 training and 10 test images in which the
# training images file stops after the first image.
import struct
import sys

out = sys.argv[1]


def write(name, magic_type, dims, payload):
    with open(f"{out}/{name}", "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, magic_type, len(dims)))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(payload)


write("train-images-idx3-ubyte", 8, [10, 28, 28], bytes(784))
write("train-labels-idx1-ubyte", 8, [10], bytes(range(10)))
write("t10k-images-idx3-ubyte", 8, [10, 28, 28], bytes(7840))
write("t10k-labels-idx1-ubyte", 8, [10], bytes(range(10)))
