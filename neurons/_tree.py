"""Params, gradients and optimizer state are trees: nested tuples with arrays at the leaves
(SPEC §10). The few walks the package needs over them, in one place.

>>> tree = ((w, b), (), ((k,),))          # dense, max-pool, a feedback block
>>> leaves(tree) == [w, b, k]
>>> [name for name, _ in named(tree, "params")] == ["params/0/0", "params/0/1", "params/2/0/0"]
"""
import numpy as np


def leaves(tree):
    """The arrays of ``tree``, depth first."""
    if isinstance(tree, tuple):
        return [leaf for t in tree for leaf in leaves(t)]
    return [tree]


def rebuild(tree, new):
    """``tree``'s structure with its leaves replaced, in order, by those of the list ``new``."""
    it = iter(new)

    def walk(t):
        return tuple(walk(s) for s in t) if isinstance(t, tuple) else next(it)
    return walk(tree)


def map(fn, tree):   # noqa: A001 (a tree map, as in jax.tree.map)
    """``tree`` with ``fn`` applied to every leaf."""
    return rebuild(tree, [fn(leaf) for leaf in leaves(tree)])


def named(tree, prefix, step="/{}"):
    """``(name, leaf)`` for every leaf, named by its place: ``prefix/i/j`` (``step="[{}]"``:
    ``prefix[i][j]``)."""
    if isinstance(tree, tuple):
        return [item for i, t in enumerate(tree) for item in named(t, prefix + step.format(i), step)]
    return [(prefix, tree)]


_EMPTY = {}


def empty(dtype):
    """A shared zero-length array of ``dtype``: the stand-in kernels take for a switched-off
    option (no bias, no momentum buffer)."""
    key = np.dtype(dtype)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty(0, key)
    return _EMPTY[key]
