"""Generates a large .bocb program and a small IDX dataset for `make bench`.

Usage: gen_large.py OUT_DIR [LINES]

Writes OUT_DIR/large.bocb, of LINES lines (default 5000), and the four
IDX files of a 64-sample training split and a 16-sample test split of
28x28 images with 10 classes in OUT_DIR/data. The program imports
std/optim and declares constants, MLP and CNN models (some calling
others as blocks, some with `for` and `if`) and optimizers with state.
Its experiments have model and optimizer lists that make grids of 4 to
6 cells. Checking it thus exercises name resolution, lowering, autodiff
and optimizer expansion on many declarations. The data is small and
uncompressed so that the time measured is the compiler's, not zlib's.
"""
import os
import struct
import sys


def write_idx(path, dims, data):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, len(dims)))
        for d in dims:
            f.write(struct.pack(">I", d))
        f.write(bytes(data))


def write_data(directory):
    os.makedirs(directory, exist_ok=True)
    for prefix, count in (("train", 64), ("t10k", 16)):
        pixels = [(i * 37 + j * 11) % 256 for i in range(count) for j in range(28 * 28)]
        labels = [i % 10 for i in range(count)]
        write_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte"), [count, 28, 28], pixels)
        write_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte"), [count], labels)


def mlp(i):
    return [
        f"model mlp{i}(x: [B, 1, 28, 28], hidden = {32 + i % 4 * 16}, depth = {1 + i % 3}) {{",
        "  h = flatten(x)",
        "  for k in range(depth) {",
        "    h = relu(linear(h, hidden))",
        "  }",
        f"  if hidden > {40 + i % 3 * 8} {{",
        "    h = h * scale",
        "  } else {",
        "    h = tanh(h)",
        "  }",
        "  return linear(h, 10)",
        "}",
        "",
    ]


def block(i):
    return [
        f"model block{i}(x: [B, 16], width = {16 + i % 3 * 8}) {{",
        "  h = relu(linear(x, width))",
        "  return linear(h, 16) + x",
        "}",
        "",
    ]


def residual(i, nblocks):
    return [
        f"model res{i}(x: [B, 1, 28, 28]) {{",
        "  h = linear(flatten(x), 16)",
        f"  h = block{i % nblocks}(h)",
        f"  h = block{(i + 1) % nblocks}(h, width = 24)",
        "  return linear(relu(h), 10)",
        "}",
        "",
    ]


def cnn(i):
    return [
        f"model cnn{i}(x: [B, 1, 28, 28], channels = {4 + i % 3 * 2}) {{",
        "  h = max_pool2d(relu(conv2d(x, channels, 3, padding = 1)), 2)",
        "  h = max_pool2d(relu(conv2d(h, channels * 2, 3, padding = 1)), 2)",
        "  return linear(flatten(h), 10)",
        "}",
        "",
    ]


def optimizer(i):
    return [
        f"optimizer heavy{i}(lr = 0.01, beta = 0.{5 + i % 4}, decay = 1e-4) {{",
        "  state m = 0",
        "  state s = 0",
        "  m = beta * m + (1 - beta) * grad",
        "  s = max(s, abs(grad))",
        "  param = param * (1 - lr * decay)",
        "  param -= lr * m / (s + 1e-8)",
        "}",
        "",
    ]


def experiment(i, models, optimizers):
    m1, m2 = models[i % len(models)], models[(i * 7 + 3) % len(models)]
    o = optimizers[i % len(optimizers)]
    extra = ", adamw(lr = 1e-3)" if i % 2 else ""
    return [
        f"experiment e{i} {{",
        "  data = synthetic",
        f"  model = [{m1}, {m2}]",
        f"  optimizer = [{o}(lr = 0.0{1 + i % 9}), sgd(lr = 0.05, momentum = 0.9){extra}]",
        "  epochs = 1",
        "  batch = 32",
        "  eval_batch = 16",
        f"  seeds = [{i}, {i + 1}]",
        "}",
        "",
    ]


def generate(out_dir, target_lines):
    data_dir = os.path.join(os.path.abspath(out_dir), "data")
    write_data(data_dir)
    header = [
        "# A generated program for the front-end benchmark (bench/gen_large.py).",
        'import "std/optim"',
        "",
        "scale = 0.5",
        f'data synthetic = idx("{data_dir}")',
        "",
    ]

    # Declarations make up about two thirds of the lines, experiments the rest.
    nblocks = 8
    decls, models, optimizers = [], [], []
    for i in range(nblocks):
        decls += block(i)
    i = 0
    while len(header) + len(decls) < target_lines * 2 // 3:
        kind = i % 5
        if kind in (0, 1):
            decls += mlp(i)
            models.append(f"mlp{i}")
        elif kind == 2:
            decls += residual(i, nblocks)
            models.append(f"res{i}")
        elif kind == 3:
            decls += cnn(i)
            models.append(f"cnn{i}")
        else:
            decls += optimizer(i)
            optimizers.append(f"heavy{i}")
        i += 1

    lines = header + decls
    e = 0
    while len(lines) + 10 <= target_lines:
        lines += experiment(e, models, optimizers)
        e += 1
    while len(lines) < target_lines:
        lines.append("")

    with open(os.path.join(out_dir, "large.bocb"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(models), len(optimizers), e


def main():
    out_dir = sys.argv[1]
    target = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    os.makedirs(out_dir, exist_ok=True)
    models, optimizers, experiments = generate(out_dir, target)
    print(f"{target} lines: {models} models, {optimizers} optimizers, "
          f"{experiments} experiments")


if __name__ == "__main__":
    main()
