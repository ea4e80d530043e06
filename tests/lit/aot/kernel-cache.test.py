"""kernel-cache.test.py - damage the entries of a kernel cache directory.

  corrupt DIR   flip a byte of every entry's object code; truncate one
  retarget DIR  change one character of every entry's target string
"""
import os
import struct
import sys

HEADER = 8 + 4 * 8


def entries(directory):
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.endswith(".o"))


def corrupt(directory):
    paths = entries(directory)
    assert paths, "no cache entries in " + directory
    for path in paths:
        data = bytearray(open(path, "rb").read())
        target_len, key_len, object_len = struct.unpack("<QQQ", data[8:32])
        offset = HEADER + target_len + key_len + object_len // 2
        data[offset] ^= 0xFF
        open(path, "wb").write(data)
    with open(paths[0], "r+b") as f:
        f.truncate(HEADER + 10)


def retarget(directory):
    paths = entries(directory)
    assert paths, "no cache entries in " + directory
    for path in paths:
        data = bytearray(open(path, "rb").read())
        data[HEADER] ^= 0x01
        open(path, "wb").write(data)


if __name__ == "__main__":
    {"corrupt": corrupt, "retarget": retarget}[sys.argv[1]](sys.argv[2])
