"""Slow, obviously correct NumPy references for every kernel.

Loops over every index where that makes the definition plain. Shared by several test files:
add new references by appending to the end of this file.
"""
import numpy as np


# ----------------------------------------------------------------- dense, activations, objectives

def dense(x, w, b=None):
    n, units = x.shape[0], w.shape[0]
    z = np.zeros((n, units), x.dtype)
    for i in range(n):
        for u in range(units):
            s = 0.0
            for k in range(x.shape[1]):
                s += x[i, k] * w[u, k]
            z[i, u] = s + (b[u] if b is not None else 0.0)
    return z


def activation(z, name):
    z = z.astype(np.float64)
    if name == "linear":
        return z
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.where(z > 0, z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise KeyError(name)


def activation_jacobian(z, name):
    """Full (N, F, F) Jacobian dy/dz by the textbook formulas."""
    n, f = z.shape
    y = activation(z, name)
    jac = np.zeros((n, f, f))
    for i in range(n):
        if name == "softmax":
            jac[i] = np.diag(y[i]) - np.outer(y[i], y[i])
        else:
            d = {"linear": np.ones(f), "sigmoid": y[i] * (1 - y[i]), "tanh": 1 - y[i] ** 2,
                 "relu": (z[i] > 0).astype(float), "leaky_relu": np.where(z[i] > 0, 1.0, 0.01)}[name]
            jac[i] = np.diag(d)
    return jac


def objective(p, y, name, eps=1e-7):
    """Batch-mean loss by the formulas in neurons/objectives.py."""
    p = p.astype(np.float64)
    y = y.astype(np.float64)
    f = p.shape[1]
    c = np.clip(p, eps, 1 - eps)
    e = p - y
    if name == "ae":
        per = np.abs(e).sum(1)
    elif name == "mae":
        per = np.abs(e).sum(1) / f
    elif name == "mse":
        per = (e ** 2).sum(1) / f
    elif name == "rmse":
        per = np.sqrt((e ** 2).sum(1) / f)
    elif name == "cross_entropy":
        per = -(y * np.log(c)).sum(1)
    elif name == "binary_cross_entropy":
        per = -(y * np.log(c) + (1 - y) * np.log(1 - c)).sum(1) / f
    elif name == "kl_divergence":
        safe = np.where(y > 0, y, 1.0)
        per = np.where(y > 0, y * (np.log(safe) - np.log(c)), 0.0).sum(1)
    else:
        raise KeyError(name)
    return per.mean()


# ----------------------------------------------------------------- convolution, transposed, max-pool

def conv2d(x, k, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """Cross-correlation by its definition, one output element at a time."""
    n, c, h, w = x.shape
    f, _, kh, kw = k.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, f, oh, ow))
    for s in range(n):
        for q in range(f):
            for a in range(oh):
                for bb in range(ow):
                    acc = 0.0 if b is None else float(b[q])
                    for ch in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                r, col = a * sh - ph + i * dh, bb * sw - pw + j * dw
                                if 0 <= r < h and 0 <= col < w:
                                    acc += x[s, ch, r, col] * k[q, ch, i, j]
                    y[s, q, a, bb] = acc
    return y


def conv_transpose2d(x, k, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), output_padding=(0, 0)):
    """Transposed convolution by its definition: every input element scatters k into the output."""
    n, c, h, w = x.shape
    _, f, kh, kw = k.shape
    (sh, sw), (ph, pw), (dh, dw), (oph, opw) = stride, padding, dilation, output_padding
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + 1 + oph
    ow = (w - 1) * sw - 2 * pw + dw * (kw - 1) + 1 + opw
    y = np.zeros((n, f, oh, ow))
    for s in range(n):
        for ch in range(c):
            for a in range(h):
                for bb in range(w):
                    for q in range(f):
                        for i in range(kh):
                            for j in range(kw):
                                r, col = a * sh - ph + i * dh, bb * sw - pw + j * dw
                                if 0 <= r < oh and 0 <= col < ow:
                                    y[s, q, r, col] += x[s, ch, a, bb] * k[ch, q, i, j]
    if b is not None:
        y += np.asarray(b, float)[None, :, None, None]
    return y


def maxpool(x, kernel, stride):
    """``(y, dx_of_ones)``: the window maxima, and where a gradient of ones lands (first maximum)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.zeros((n, c, oh, ow))
    hits = np.zeros(x.shape)
    for s in range(n):
        for ch in range(c):
            for a in range(oh):
                for bb in range(ow):
                    window = x[s, ch, a * sh:a * sh + kh, bb * sw:bb * sw + kw]
                    i, j = np.unravel_index(int(np.argmax(window)), window.shape)   # argmax: first maximum
                    y[s, ch, a, bb] = window[i, j]
                    hits[s, ch, a * sh + i, bb * sw + j] += 1
    return y, hits


# ----------------------------------------------------------------- batch normalization

def batchnorm(x, gamma, beta, eps, mean=None, var=None):
    """``(y, mean, biased var)``: batch normalization of x (N, C) or (N, C, H, W) per channel, one
    channel and one element at a time; with ``mean`` and ``var`` given (inference) those are used."""
    x = np.asarray(x, np.float64)
    n, c = x.shape[:2]
    train = mean is None
    if train:
        mean, var = np.zeros(c), np.zeros(c)
    y = np.zeros(x.shape)
    for ch in range(c):
        vals = [float(v) for v in x[:, ch].ravel()]
        if train:
            mean[ch] = sum(vals) / len(vals)
            var[ch] = sum((v - mean[ch]) ** 2 for v in vals) / len(vals)
        for idx in np.ndindex(*x[:, ch].shape):
            full = (idx[0], ch) + idx[1:]
            y[full] = (x[full] - mean[ch]) / np.sqrt(var[ch] + eps) * gamma[ch] + beta[ch]
    return y, mean, var


# ----------------------------------------------------------------- recurrent layers

def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def recurrent(x, w_ih, w_hh, b_ih, b_hh, cell):
    """Every step's output ``(N, T, H)`` of a one-layer ``torch.nn.RNN`` (tanh) / ``LSTM`` /
    ``GRU`` (batch first, zero initial state), one sample, one step and one unit at a time, from
    the equations in PyTorch's documentation; ``b_ih``/``b_hh`` may be None (no bias)."""
    x = np.asarray(x, np.float64)
    n, steps, f = x.shape
    units = w_hh.shape[1]
    g = w_hh.shape[0] // units
    b_ih = np.zeros(g * units) if b_ih is None else np.asarray(b_ih, np.float64)
    b_hh = np.zeros(g * units) if b_hh is None else np.asarray(b_hh, np.float64)
    out = np.zeros((n, steps, units))
    for s in range(n):
        h, c = np.zeros(units), np.zeros(units)
        for t in range(steps):
            gi = [sum(w_ih[r, k] * x[s, t, k] for k in range(f)) + b_ih[r] for r in range(g * units)]
            gh = [sum(w_hh[r, k] * h[k] for k in range(units)) + b_hh[r] for r in range(g * units)]
            new_h, new_c = np.zeros(units), np.zeros(units)
            for u in range(units):
                pre = [gi[q * units + u] + gh[q * units + u] for q in range(g)]
                if cell == "rnn":
                    new_h[u] = np.tanh(pre[0])
                elif cell == "lstm":
                    i, fg, gg, o = _sig(pre[0]), _sig(pre[1]), np.tanh(pre[2]), _sig(pre[3])
                    new_c[u] = fg * c[u] + i * gg
                    new_h[u] = o * np.tanh(new_c[u])
                else:
                    r, z = _sig(pre[0]), _sig(pre[1])
                    nn = np.tanh(gi[2 * units + u] + r * gh[2 * units + u])
                    new_h[u] = (1 - z) * nn + z * h[u]
            h, c = new_h, new_c
            out[s, t] = h
    return out
