"""Seeded corruptions of a file's bytes, for fuzzing loaders (SPEC §12: every corrupt file is a
``ValueError`` naming the path)."""
import numpy as np


def mutants(data, n, seed=0, head=16, tail=8):
    """``n`` corrupted copies of ``data`` as ``(what, bytes)`` pairs.

    Each is one of: one to three bytes XOR-ed with a non-zero value (a third of them in the first
    ``head`` bytes, a third in the last ``tail``, where formats keep their headers and checksums),
    the tail cut off, or random bytes appended.
    """
    rng = np.random.default_rng(seed)
    regions = [(0, min(head, len(data))), (max(0, len(data) - tail), len(data)), (0, len(data))]
    for _ in range(n):
        kind = rng.integers(4)
        if kind < 2:
            buf = bytearray(data)
            where = []
            for _ in range(1 if kind == 0 else int(rng.integers(2, 4))):
                lo, hi = regions[rng.integers(3)]
                i = int(rng.integers(lo, hi))
                buf[i] ^= int(rng.integers(1, 256))
                where.append(i)
            yield f"bytes flipped at {sorted(where)}", bytes(buf)
        elif kind == 2:
            cut = int(rng.integers(len(data)))
            yield f"cut to {cut} bytes", data[:cut]
        else:
            extra = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
            yield f"{len(extra)} bytes appended", data + extra
