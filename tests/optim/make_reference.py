#!/usr/bin/env python3
"""make_reference.py - reference values for tests/unit/test_optim_zoo.c.

Runs every optimizer of stdlib/optim for 10 steps on two small problems and
writes the parameters after each step and the final optimizer state to
tests/optim/reference.h, so that `make check` needs neither PyTorch nor
NumPy. Optimizers that torch.optim 1.13 has run through torch.optim itself.
The others run through the NumPy functions below, written from each paper
and its authors' reference code. Gradients come from torch.autograd, in
double precision.

Problems:
  quadratic            loss = 0.5 * sum(h * (w - c)^2), w of shape [4, 3]
  quadratic_zero_init  the same with w = 0 at the start
  zero_grad            h = 0, so every gradient is zero
  mlp                  cross_entropy(linear(tanh(linear(x, 4)), 3), labels)
                       on 4 samples of 3 features

Usage: python3 tests/optim/make_reference.py [OUTPUT]   (Debian: python3-torch
python3-numpy, development only)
"""
import math
import sys

import numpy as np
import torch

STEPS = 10
torch.set_default_dtype(torch.float64)

# ---- problems ------------------------------------------------------------

rng = np.random.default_rng(20261204)
QUAD_H = rng.uniform(0.5, 2.0, (4, 3))
QUAD_C = rng.uniform(-1.0, 1.0, (4, 3))
QUAD_W0 = rng.uniform(-1.0, 1.0, (4, 3))
MLP_X = rng.uniform(-1.0, 1.0, (4, 3))
MLP_LABELS = np.array([0, 2, 1, 2])
MLP_INIT = [rng.uniform(-0.5, 0.5, s) for s in [(4, 3), (4,), (3, 4), (3,)]]
PARAM_NAMES = {"quadratic": ["w"], "quadratic_zero_init": ["w"], "zero_grad": ["w"],
               "mlp": ["tiny.linear1.weight", "tiny.linear1.bias",
                       "tiny.linear2.weight", "tiny.linear2.bias"]}


def initial(problem):
    if problem == "quadratic":
        return [QUAD_W0.copy()]
    if problem in ("quadratic_zero_init", "zero_grad"):
        return [np.zeros((4, 3))]
    return [p.copy() for p in MLP_INIT]


def loss_of(problem, params):
    if problem == "mlp":
        w1, b1, w2, b2 = params
        h = torch.tanh(torch.tensor(MLP_X) @ w1.T + b1)
        logits = h @ w2.T + b2
        return torch.nn.functional.cross_entropy(logits, torch.tensor(MLP_LABELS))
    h = torch.zeros(4, 3) if problem == "zero_grad" else torch.tensor(QUAD_H)
    return 0.5 * (h * (params[0] - torch.tensor(QUAD_C)) ** 2).sum()


def gradients(problem, arrays):
    params = [torch.tensor(a, requires_grad=True) for a in arrays]
    loss_of(problem, params).backward()
    return [p.grad.numpy().copy() for p in params]


# ---- torch.optim ---------------------------------------------------------

def run_torch(problem, make, state_map):
    params = [torch.nn.Parameter(torch.tensor(a)) for a in initial(problem)]
    opt = make(params)
    history = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss_of(problem, params).backward()
        opt.step()
        history.append([p.detach().numpy().copy() for p in params])
    states = {}
    for ours, theirs in state_map.items():
        states[ours] = [np.broadcast_to(opt.state[p][theirs].detach().numpy(), p.shape).copy()
                        for p in params]
    return history, states


# ---- NumPy implementations of the published update rules ------------------
# Each takes (param, grad, state dict, step t from 1, hyperparameters) and
# returns the new parameter. It updates the state dict in place.

def np_sign_sgd(p, g, s, t, lr, momentum=0.0, weight_decay=0.0):
    g = g + weight_decay * p
    if momentum:
        s["buf"] = momentum * s.get("buf", 0 * p) + (1 - momentum) * g
        g = s["buf"]
    return p - lr * np.sign(g)


def np_lion(p, g, s, t, lr=1e-4, beta1=0.9, beta2=0.99, weight_decay=0.0):
    m = s.get("m", 0 * p)
    p = p * (1 - lr * weight_decay)
    p = p - lr * np.sign(beta1 * m + (1 - beta1) * g)
    s["m"] = beta2 * m + (1 - beta2) * g
    return p


def projection(p, g, d, delta, eps):
    """AdamP/SGDP: returns (d, projected) with the radial part removed."""
    if p.ndim < 2:
        return d, False
    rows = p.reshape(p.shape[0], -1)
    grows = g.reshape(p.shape[0], -1)
    drows = d.reshape(p.shape[0], -1)

    def cos(x, y):
        # torch 1.13's F.cosine_similarity clamps each norm to eps.
        return np.abs((x * y).sum(1)) / (np.maximum(np.sqrt((x * x).sum(1)), eps) *
                                         np.maximum(np.sqrt((y * y).sum(1)), eps))

    if cos(grows, rows).max() < delta / math.sqrt(rows.shape[1]):
        unit = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + eps)
        drows = drows - unit * (unit * drows).sum(1, keepdims=True)
        return drows.reshape(p.shape), "channel"
    flat, gflat = p.reshape(1, -1), g.reshape(1, -1)
    if cos(gflat, flat).max() < delta / math.sqrt(flat.shape[1]):
        unit = flat / (np.linalg.norm(flat) + eps)
        dflat = d.reshape(1, -1)
        dflat = dflat - unit * (unit * dflat).sum()
        return dflat.reshape(p.shape), "layer"
    return d, False


BRANCHES = set()


def np_sgdp(p, g, s, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0,
            nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1):
    buf = momentum * s.get("buf", 0 * p) + (1 - dampening) * g
    s["buf"] = buf
    d = g + momentum * buf if nesterov else buf
    d, projected = projection(p, g, d, delta, eps)
    BRANCHES.add(("sgdp", projected))
    ratio = wd_ratio if projected else 1.0
    p = p * (1 - lr * weight_decay * ratio / (1 - momentum))
    return p - lr * d


def np_adamp(p, g, s, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             delta=0.1, wd_ratio=0.1, nesterov=False):
    m = beta1 * s.get("m", 0 * p) + (1 - beta1) * g
    v = beta2 * s.get("v", 0 * p) + (1 - beta2) * g * g
    s["m"], s["v"] = m, v
    denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + eps
    d = (beta1 * m + (1 - beta1) * g) / denom if nesterov else m / denom
    d, projected = projection(p, g, d, delta, eps)
    BRANCHES.add(("adamp", projected))
    ratio = wd_ratio if projected else 1.0
    p = p * (1 - lr * weight_decay * ratio)
    return p - lr / (1 - beta1 ** t) * d


def np_lamb(p, g, s, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0):
    m = beta1 * s.get("m", 0 * p) + (1 - beta1) * g
    v = beta2 * s.get("v", 0 * p) + (1 - beta2) * g * g
    s["m"], s["v"] = m, v
    r = (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps) + weight_decay * p
    wn, rn = np.linalg.norm(p), np.linalg.norm(r)
    ratio = wn / rn if wn > 0 and rn > 0 else 1.0
    return p - lr * ratio * r


def np_lars(p, g, s, t, lr, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3,
            eps=1e-8):
    wn, gn = np.linalg.norm(p), np.linalg.norm(g)
    ratio = (trust_coefficient * wn / (gn + weight_decay * wn + eps)
             if wn > 0 and gn > 0 else 1.0)
    d = ratio * (g + weight_decay * p)
    if momentum:
        s["buf"] = d if t == 1 else momentum * s["buf"] + d
        d = s["buf"]
    return p - lr * d


def np_novograd(p, g, s, t, lr=1e-3, beta1=0.95, beta2=0.98, eps=1e-8, weight_decay=0.0,
                grad_averaging=False):
    n = float((g * g).sum())
    v = s.get("v", 0.0)
    v = n if v == 0 else beta2 * v + (1 - beta2) * n
    s["v"] = v
    g = g / (math.sqrt(v) + eps) + weight_decay * p
    if grad_averaging:
        g = g * (1 - beta1)
    s["m"] = beta1 * s.get("m", 0 * p) + g
    return p - lr * s["m"]


def np_adan(p, g, s, t, lr=1e-3, beta1=0.98, beta2=0.92, beta3=0.99, eps=1e-8,
            weight_decay=0.0, no_prox=False):
    prev = g if t == 1 else s["prev_grad"]
    diff = g - prev
    m = beta1 * s.get("m", 0 * p) + (1 - beta1) * g
    v = beta2 * s.get("v", 0 * p) + (1 - beta2) * diff
    ahead = g + beta2 * diff
    n = beta3 * s.get("n", 0 * p) + (1 - beta3) * ahead * ahead
    s["m"], s["v"], s["n"], s["prev_grad"] = m, v, n, g.copy()
    denom = np.sqrt(n) / math.sqrt(1 - beta3 ** t) + eps
    u = (m / (1 - beta1 ** t) + beta2 * v / (1 - beta2 ** t)) / denom
    if no_prox:
        return p * (1 - lr * weight_decay) - lr * u
    return (p - lr * u) / (1 + lr * weight_decay)


def np_adabound(p, g, s, t, lr=1e-3, beta1=0.9, beta2=0.999, final_lr=0.1, gamma=1e-3,
                eps=1e-8, weight_decay=0.0, amsbound=False):
    g = g + weight_decay * p
    m = beta1 * s.get("m", 0 * p) + (1 - beta1) * g
    v = beta2 * s.get("v", 0 * p) + (1 - beta2) * g * g
    s["m"], s["v"] = m, v
    if amsbound:
        s["v_max"] = np.maximum(s.get("v_max", 0 * p), v)
        v = s["v_max"]
    step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    lower = final_lr * (1 - 1 / (gamma * t + 1))
    upper = final_lr * (1 + 1 / (gamma * t))
    return p - np.clip(step_size / (np.sqrt(v) + eps), lower, upper) * m


def np_adabelief(p, g, s, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-16, weight_decay=0.0,
                 weight_decouple=True, fixed_decay=False, rectify=True,
                 degenerated_to_sgd=True):
    if weight_decouple:
        p = p * (1 - (weight_decay if fixed_decay else lr * weight_decay))
    else:
        g = g + weight_decay * p
    m = beta1 * s.get("m", 0 * p) + (1 - beta1) * g
    r = g - m
    var = beta2 * s.get("s", 0 * p) + (1 - beta2) * r * r + eps
    s["m"], s["s"] = m, var
    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
    if not rectify:
        return p - lr / bc1 * m / (np.sqrt(var) / math.sqrt(bc2) + eps)
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2 ** t / bc2
    if rho_t >= 5:
        step = math.sqrt(bc2 * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t *
                         rho_inf / (rho_inf - 2)) / bc1
        return p - lr * step * m / (np.sqrt(var) + eps)
    if degenerated_to_sgd:
        return p - lr / bc1 * m
    return p


def np_adafactor(p, g, s, t, lr=0.0, eps1=1e-30, eps2=1e-3, clip_threshold=1.0,
                 decay_rate=-0.8, beta1=0.0, weight_decay=0.0, scale_parameter=True,
                 relative_step=True, warmup_init=False):
    def rms(x):
        return np.linalg.norm(x) / math.sqrt(x.size)

    if relative_step:
        rho = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t))
    else:
        rho = lr
    alpha = rho * max(eps2, rms(p)) if scale_parameter else rho
    beta2 = 1 - t ** decay_rate
    sq = g * g + eps1
    if p.ndim >= 2:
        # fairseq keeps row [.., R] and col [.., C]. The .bocb rule keeps
        # them with the reduced axis as length 1, and that shape is stored.
        row = beta2 * s.get("row", 0) + (1 - beta2) * sq.mean(-1, keepdims=True)
        col = beta2 * s.get("col", 0) + (1 - beta2) * sq.mean(-2, keepdims=True)
        s["row"], s["col"] = row, col
        r_factor = 1 / np.sqrt(row / row.mean(-2, keepdims=True))
        u = r_factor * (1 / np.sqrt(col)) * g
    else:
        s["v"] = beta2 * s.get("v", 0 * p) + (1 - beta2) * sq
        u = g / np.sqrt(s["v"])
    u = u / max(1.0, rms(u) / clip_threshold)
    u = alpha * u
    if beta1 > 0:
        s["m"] = beta1 * s.get("m", 0 * p) + (1 - beta1) * u
        u = s["m"]
    return p - weight_decay * alpha * p - u


# ---- Sophia: Philox4x32-10 and label sampling, as runtime/philox.c and
# rt_sample_labels compute them, for the Gauss-Newton-Bartlett estimate ----

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
HESS_STREAM = 0x48455353


def philox4x32_10(counter, key):
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_ in range(10):
        if round_ > 0:
            k0 = (k0 + 0x9E3779B9) & M32
            k1 = (k1 + 0xBB67AE85) & M32
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32)
    return c0, c1, c2, c3


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def philox_key(seed, stream):
    stream_bits = mix64((stream * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & M64)
    mixed = mix64(mix64(seed) ^ stream_bits)
    return mixed & M32, mixed >> 32


def philox_uniform_f64(key, index):
    block = philox4x32_10(((index // 2) & M32, (index // 2) >> 32, 0, 0), key)
    word = (index % 2) * 2
    bits = (block[word] << 32) | block[word + 1]
    return (bits >> 11) * 2.0 ** -53


def sample_labels(logits, step):
    key = philox_key(HESS_STREAM, step)
    labels = []
    for i, row in enumerate(logits.tolist()):
        row_max = max(row)
        total = 0.0
        for z in row:
            total += math.exp(z - row_max)
        target, running, label = philox_uniform_f64(key, i) * total, 0.0, len(row) - 1
        for j, z in enumerate(row):
            running += math.exp(z - row_max)
            if target < running:
                label = j
                break
        labels.append(label)
    return labels


def run_sophia(problem, lr=1e-4, beta1=0.965, beta2=0.99, rho=0.04, weight_decay=0.1, k=10,
               eps=1e-15):
    """Sophia on the MLP: the published update rule and SophiaG, with the
    estimate refreshed at the start of steps 1, k + 1, ... (sophia.bocb)."""
    assert problem == "mlp"
    params = initial(problem)
    m = [0 * p for p in params]
    h = [0 * p for p in params]
    history = []
    for t in range(1, STEPS + 1):
        grads = gradients(problem, params)
        tensors = [torch.tensor(a, requires_grad=True) for a in params]
        w1, b1, w2, b2 = tensors
        logits = torch.tanh(torch.tensor(MLP_X) @ w1.T + b1) @ w2.T + b2
        sampled = torch.tensor(sample_labels(logits.detach(), t))
        torch.nn.functional.cross_entropy(logits, sampled).backward()
        for i, (p, g, x) in enumerate(zip(params, grads, tensors)):
            if (t - 1) % k == 0:
                estimate = len(MLP_LABELS) * x.grad.numpy() ** 2
                h[i] = beta2 * h[i] + (1 - beta2) * estimate
            p = p * (1 - lr * weight_decay)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            params[i] = p - lr * np.sign(m[i]) * np.minimum(np.abs(m[i]) / (rho * h[i] + eps), 1)
        history.append([p.copy() for p in params])
    return history, {"h": [a.copy() for a in h], "m": [a.copy() for a in m]}


def run_numpy(problem, rule, kwargs):
    params = initial(problem)
    states = [dict() for _ in params]
    history = []
    for t in range(1, STEPS + 1):
        grads = gradients(problem, params)
        params = [rule(p, g, s, t, **kwargs) for p, g, s in zip(params, grads, states)]
        history.append([p.copy() for p in params])
    # A state that a parameter does not have (Adafactor's row for a bias)
    # is left out; the others keep their own shape.
    names = sorted(set().union(*states))
    # NovoGrad's v is one number per tensor, stored at the parameter's size.
    return history, {n: [np.broadcast_to(s[n], p.shape).copy() if np.ndim(s[n]) == 0
                         else np.asarray(s[n]).copy()
                         for s, p in zip(states, params) if n in s]
                     for n in names}


# ---- cases ---------------------------------------------------------------

O = torch.optim


def torch_case(spec, make, state_map):
    return spec, lambda problem: run_torch(problem, make, state_map)


def numpy_case(spec, rule, **kwargs):
    return spec, lambda problem: run_numpy(problem, rule, kwargs)


ADAM_STATE = {"m": "exp_avg", "v": "exp_avg_sq"}
CASES = [
    torch_case("sgd(lr = 0.1)", lambda p: O.SGD(p, lr=0.1), {}),
    torch_case("sgd(lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01)",
               lambda p: O.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
               {"buf": "momentum_buffer"}),
    torch_case("sgd(lr = 0.05, momentum = 0.8, dampening = 0.3)",
               lambda p: O.SGD(p, lr=0.05, momentum=0.8, dampening=0.3),
               {"buf": "momentum_buffer"}),
    torch_case("adam(lr = 0.01)", lambda p: O.Adam(p, lr=0.01), ADAM_STATE),
    torch_case("adam(lr = 0.01, weight_decay = 0.1, amsgrad = true)",
               lambda p: O.Adam(p, lr=0.01, weight_decay=0.1, amsgrad=True),
               dict(ADAM_STATE, v_max="max_exp_avg_sq")),
    torch_case("adamw(lr = 0.01)", lambda p: O.AdamW(p, lr=0.01), ADAM_STATE),
    torch_case("adamw(lr = 0.01, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, weight_decay = 0.1, "
               "amsgrad = true)",
               lambda p: O.AdamW(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1,
                                 amsgrad=True),
               dict(ADAM_STATE, v_max="max_exp_avg_sq")),
    torch_case("adamax()", lambda p: O.Adamax(p), {"m": "exp_avg", "u": "exp_inf"}),
    torch_case("adamax(lr = 0.01, weight_decay = 0.1)",
               lambda p: O.Adamax(p, lr=0.01, weight_decay=0.1),
               {"m": "exp_avg", "u": "exp_inf"}),
    torch_case("nadam()", lambda p: O.NAdam(p), dict(ADAM_STATE, mu_product="mu_product")),
    torch_case("nadam(lr = 0.01, weight_decay = 0.1, momentum_decay = 0.01)",
               lambda p: O.NAdam(p, lr=0.01, weight_decay=0.1, momentum_decay=0.01),
               dict(ADAM_STATE, mu_product="mu_product")),
    torch_case("radam(lr = 0.01)", lambda p: O.RAdam(p, lr=0.01), ADAM_STATE),
    torch_case("radam(lr = 0.01, beta2 = 0.9, weight_decay = 0.1)",
               lambda p: O.RAdam(p, lr=0.01, betas=(0.9, 0.9), weight_decay=0.1), ADAM_STATE),
    torch_case("adagrad(lr = 0.1)", lambda p: O.Adagrad(p, lr=0.1), {"sum_sq": "sum"}),
    torch_case("adagrad(lr = 0.1, lr_decay = 0.1, weight_decay = 0.1, "
               "initial_accumulator_value = 0.5)",
               lambda p: O.Adagrad(p, lr=0.1, lr_decay=0.1, weight_decay=0.1,
                                   initial_accumulator_value=0.5), {"sum_sq": "sum"}),
    torch_case("adadelta()", lambda p: O.Adadelta(p),
               {"square_avg": "square_avg", "acc_delta": "acc_delta"}),
    torch_case("adadelta(lr = 0.5, rho = 0.8, weight_decay = 0.1)",
               lambda p: O.Adadelta(p, lr=0.5, rho=0.8, weight_decay=0.1),
               {"square_avg": "square_avg", "acc_delta": "acc_delta"}),
    torch_case("rmsprop()", lambda p: O.RMSprop(p), {"square_avg": "square_avg"}),
    torch_case("rmsprop(lr = 0.005, centered = true, momentum = 0.9, weight_decay = 0.1)",
               lambda p: O.RMSprop(p, lr=0.005, centered=True, momentum=0.9, weight_decay=0.1),
               {"square_avg": "square_avg", "grad_avg": "grad_avg", "buf": "momentum_buffer"}),
    numpy_case("sign_sgd(lr = 0.01)", np_sign_sgd, lr=0.01),
    numpy_case("sign_sgd(lr = 0.01, momentum = 0.9, weight_decay = 0.1)", np_sign_sgd,
               lr=0.01, momentum=0.9, weight_decay=0.1),
    numpy_case("lion(lr = 1e-3)", np_lion, lr=1e-3),
    numpy_case("lion(lr = 1e-3, beta1 = 0.95, weight_decay = 0.5)", np_lion, lr=1e-3,
               beta1=0.95, weight_decay=0.5),
    numpy_case("sgdp(lr = 0.1)", np_sgdp, lr=0.1),
    numpy_case("sgdp(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.1, delta = 1)",
               np_sgdp, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, delta=1.0),
    numpy_case("sgdp(lr = 0.1, dampening = 0.5, momentum = 0.5, weight_decay = 0.1, delta = 3)",
               np_sgdp, lr=0.1, momentum=0.5, dampening=0.5, weight_decay=0.1, delta=3.0),
    numpy_case("adamp(lr = 0.01)", np_adamp, lr=0.01),
    numpy_case("adamp(lr = 0.01, weight_decay = 0.1, delta = 1, nesterov = true)", np_adamp,
               lr=0.01, weight_decay=0.1, delta=1.0, nesterov=True),
    numpy_case("adamp(lr = 0.01, weight_decay = 0.1, delta = 3)", np_adamp, lr=0.01,
               weight_decay=0.1, delta=3.0),
    numpy_case("lamb(lr = 0.01)", np_lamb, lr=0.01),
    numpy_case("lamb(lr = 0.01, weight_decay = 0.1)", np_lamb, lr=0.01, weight_decay=0.1),
    numpy_case("lars(lr = 0.1)", np_lars, lr=0.1),
    numpy_case("lars(lr = 0.1, momentum = 0, weight_decay = 0.01, trust_coefficient = 0.02)",
               np_lars, lr=0.1, momentum=0.0, weight_decay=0.01, trust_coefficient=0.02),
    numpy_case("novograd(lr = 0.01)", np_novograd, lr=0.01),
    numpy_case("novograd(lr = 0.01, weight_decay = 0.1, grad_averaging = true)", np_novograd,
               lr=0.01, weight_decay=0.1, grad_averaging=True),
    numpy_case("adan(lr = 0.01)", np_adan, lr=0.01),
    numpy_case("adan(lr = 0.01, weight_decay = 0.1)", np_adan, lr=0.01, weight_decay=0.1),
    numpy_case("adan(lr = 0.01, weight_decay = 0.1, no_prox = true)", np_adan, lr=0.01,
               weight_decay=0.1, no_prox=True),
    numpy_case("adabound(lr = 0.01)", np_adabound, lr=0.01),
    numpy_case("adabound(lr = 0.01, final_lr = 0.05, weight_decay = 0.1, amsbound = true)",
               np_adabound, lr=0.01, final_lr=0.05, weight_decay=0.1, amsbound=True),
    numpy_case("adabelief(lr = 0.01)", np_adabelief, lr=0.01),
    numpy_case("adabelief(lr = 0.01, rectify = false, weight_decouple = false, "
               "weight_decay = 0.1)", np_adabelief, lr=0.01, rectify=False,
               weight_decouple=False, weight_decay=0.1),
    numpy_case("adabelief(lr = 0.01, degenerated_to_sgd = false, fixed_decay = true, "
               "weight_decay = 0.01)", np_adabelief, lr=0.01, degenerated_to_sgd=False,
               fixed_decay=True, weight_decay=0.01),
    ("sophia(lr = 1e-3)", lambda problem: run_sophia(problem, lr=1e-3)),
    ("sophia(lr = 1e-3, k = 3, rho = 0.5, weight_decay = 0)",
     lambda problem: run_sophia(problem, lr=1e-3, k=3, rho=0.5, weight_decay=0.0)),
    ("sophia(lr = 1e-2, beta1 = 0.9, beta2 = 0.5, k = 1)",
     lambda problem: run_sophia(problem, lr=1e-2, beta1=0.9, beta2=0.5, k=1)),
    ("sophia(lr = 1e-3, k = 20, eps = 1e-3)",
     lambda problem: run_sophia(problem, lr=1e-3, k=20, eps=1e-3)),
    numpy_case("adafactor()", np_adafactor),
    numpy_case("adafactor(lr = 0.01, relative_step = false, beta1 = 0.9, weight_decay = 0.1)",
               np_adafactor, lr=0.01, relative_step=False, beta1=0.9, weight_decay=0.1),
    numpy_case("adafactor(warmup_init = true, scale_parameter = false, clip_threshold = 0.5)",
               np_adafactor, warmup_init=True, scale_parameter=False, clip_threshold=0.5),
]

# Each optimizer's first case also runs on the edge-case problems.
EDGE_PROBLEMS = ["quadratic_zero_init", "zero_grad"]


def learning_rate(spec):
    name = spec.split("(")[0]
    for arg in spec[len(name) + 1:-1].split(","):
        key, _, value = arg.partition("=")
        if key.strip() == "lr":
            return float(value)
    return {"adamax": 2e-3, "nadam": 2e-3, "adadelta": 1.0, "rmsprop": 1e-2,
            "adafactor": 0.0}[name]


# ---- output --------------------------------------------------------------

def c_array(name, values):
    text = ", ".join(f"{v!r}" for v in values)
    return f"static const double {name}[] = {{{text}}};\n"


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/optim/reference.h"
    out = ["/* reference.h - generated by tests/optim/make_reference.py with torch "
           f"{torch.__version__} and NumPy {np.__version__}; do not edit. */\n",
           f"enum {{ REF_STEPS = {STEPS} }};\n",
           c_array("ref_quad_h", QUAD_H.ravel()), c_array("ref_quad_c", QUAD_C.ravel()),
           c_array("ref_quad_w0", QUAD_W0.ravel()), c_array("ref_mlp_x", MLP_X.ravel()),
           "static const int ref_mlp_labels[] = {%s};\n" % ", ".join(map(str, MLP_LABELS)),
           c_array("ref_mlp_init", np.concatenate([p.ravel() for p in MLP_INIT]))]
    entries = []
    seen = set()
    for index, (spec, run) in enumerate(CASES):
        name = spec.split("(")[0]
        # Sophia's estimate needs a model with a softmax: the MLP only.
        problems = ["mlp"] if name == "sophia" else ["quadratic", "mlp"]
        if name not in seen and name != "sophia":
            problems += EDGE_PROBLEMS
            seen.add(name)
        for problem in problems:
            history, states = run(problem)
            tag = f"ref{len(entries)}"
            flat = np.concatenate([np.concatenate([p.ravel() for p in step])
                                   for step in history])
            assert np.all(np.isfinite(flat)), (spec, problem)
            out.append(c_array(f"{tag}_params", flat))
            state_names = sorted(states)
            nstate_values = sum(a.size for n in state_names for a in states[n])
            if state_names:
                out.append(c_array(f"{tag}_states", np.concatenate(
                    [np.concatenate([a.ravel() for a in states[n]]) for n in state_names])))
                out.append("static const char *const %s_state_names[] = {%s};\n" % (
                    tag, ", ".join(f'"{n}"' for n in state_names)))
            entries.append((spec, problem, learning_rate(spec), tag, len(state_names),
                            nstate_values))
    out.append("static const RefCase ref_cases[] = {\n")
    for spec, problem, lr, tag, nstates, nvalues in entries:
        names = f"{tag}_state_names" if nstates else "NULL"
        states = f"{tag}_states" if nstates else "NULL"
        out.append(f'    {{"{spec}", "{problem}", {lr!r}, {tag}_params, {nstates}, '
                   f"{names}, {states}, {nvalues}}},\n")
    out.append("};\n")
    with open(out_path, "w") as f:
        f.write("".join(out))
    print(f"{len(entries)} cases; projection branches seen: {sorted(map(str, BRANCHES))}")


if __name__ == "__main__":
    main()
