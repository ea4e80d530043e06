#!/usr/bin/env python3
"""interrupt.py - stop bocbc runs by signals and check what they leave.

  interrupt.py signal NAME LINES REPORT -- BOCBC ARGS...
      runs BOCBC ARGS, sends signal NAME (INT or TERM) after LINES
      progress lines ("... step i/n ...") and prints "exit status N"
  interrupt.py kill TIMES SEED REPORT -- BOCBC ARGS...
      TIMES times: runs BOCBC ARGS, sends SIGKILL after a random number of
      progress lines and a random delay (drawn from SEED), then checks that
      every checkpoint under REPORT/checkpoints is a whole, valid
      safetensors file whose CRC-32 matches; prints "kills: TIMES" at the end
  interrupt.py same-epochs EPOCHS_A EPOCHS_B
      the two epochs.csv files agree in every column but `seconds`
  interrupt.py states REPORT
      prints the state of each checkpoint ("running" or "finished"), sorted

Exit status 1 with a message on failure.
"""
import csv
import glob
import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
import zlib


def fail(message):
    print("interrupt: " + message, file=sys.stderr)
    sys.exit(1)


def read_checkpoint(path):
    """Parses a safetensors file independently of bocbc and checks it."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        fail(f"{path}: {len(data)} bytes, torn")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        fail(f"{path}: header length {n} beyond the file, torn")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__")
    body = data[8 + n:]
    end = max([t["data_offsets"][1] for t in header.values()] + [0])
    if end != len(body):
        fail(f"{path}: tensors cover {end} of {len(body)} data bytes, torn")
    crc = "crc32:%08x" % (zlib.crc32(body) & 0xFFFFFFFF)
    if meta.get("checksum") != crc:
        fail(f"{path}: checksum {meta.get('checksum')} but the data has {crc}")
    return meta


def progress_lines(proc):
    for line in proc.stdout:
        if " step " in line:
            yield line


def run_signal(name, lines, argv):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    seen = 0
    for _ in progress_lines(proc):
        seen += 1
        if seen == lines:
            proc.send_signal(getattr(signal, "SIG" + name))
            break
    proc.stdout.read()
    status = proc.wait()
    if seen < lines:
        fail(f"the run ended after {seen} progress lines, before the signal")
    print(f"exit status {status}")


def run_kill(times, seed, report, argv):
    rng = random.Random(seed)
    for i in range(times):
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        target = rng.randint(1, 12)
        seen = 0
        for _ in progress_lines(proc):
            seen += 1
            if seen == target:
                break
        time.sleep(rng.uniform(0, 0.03))
        proc.kill()
        proc.stdout.read()
        proc.wait()
        for path in glob.glob(os.path.join(report, "checkpoints", "*.safetensors")):
            read_checkpoint(path)
    print(f"kills: {times}")


def same_epochs(a_path, b_path):
    with open(a_path, newline="") as f:
        a = list(csv.DictReader(f))
    with open(b_path, newline="") as f:
        b = list(csv.DictReader(f))
    if len(a) != len(b):
        fail(f"{a_path} has {len(a)} rows but {b_path} has {len(b)}")
    for i, (x, y) in enumerate(zip(a, b)):
        for key in x:
            if key != "seconds" and x[key] != y[key]:
                fail(f"row {i + 2}: {key} is {x[key]} in {a_path} but {y[key]} in {b_path}")
    print(f"same epochs: {len(a)} rows")


def states(report):
    paths = sorted(glob.glob(os.path.join(report, "checkpoints", "*.safetensors")))
    for path in paths:
        meta = read_checkpoint(path)
        print(f"{meta['optimizer']}: {meta['state']}")


def main():
    args = sys.argv[1:]
    if "--" in args:
        cut = args.index("--")
        args, argv = args[:cut], args[cut + 1:]
    if args[0] == "signal":
        run_signal(args[1], int(args[2]), argv)
    elif args[0] == "kill":
        run_kill(int(args[1]), int(args[2]), args[3], argv)
    elif args[0] == "same-epochs":
        same_epochs(args[1], args[2])
    elif args[0] == "states":
        states(args[1])
    else:
        fail(f"unknown command {args[0]}")


if __name__ == "__main__":
    main()
