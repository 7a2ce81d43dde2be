"""Numba's on-disk cache, made safe for several processes compiling at once.

Numba keeps one index file per function (signature -> data file) and writes each file whole, but
adding an entry reads the index, picks the first free data file name and writes both back, with
nothing held in between: two processes that compile different signatures of one function at the
same time can each give their signature the same data file, and the one written last is then
loaded for the other signature. That machine code, called with the wrong argument types,
crashed a process here (a segfault, in a cold-start helper compiling in the opposite order of
the training process, ``_warm.py``); Dask workers and MPI ranks on an empty cache are exposed
the same way. ``install`` wraps Numba's ``save`` and ``load`` in a lock on a file beside the
index (``fcntl.flock``: exclusive to save, shared to load), which makes each one whole; and
``Dispatcher.compile`` in a lock per function and signature, so that a kernel two processes
need at once is compiled by one of them and loaded by the other.

``SAFE`` says whether the lock is in place (not where ``fcntl`` or these Numba internals are
missing; ``_warm.py`` then starts no helper).
"""
import os

SAFE = False


def _holding(path, mode, fn, *args):
    """``fn(*args)`` while holding an ``fcntl.flock`` on the file ``path`` (made if need be), in
    ``mode``; without it where the file cannot be made (a read-only cache folder: then nothing is
    saved there either)."""
    import fcntl
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)      # (Numba makes it at its first save)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return fn(*args)
    try:
        fcntl.flock(fd, mode)
        return fn(*args)
    finally:
        os.close(fd)            # closing releases the lock


def _locked(method, mode):
    """``method`` (``save`` or ``load``) run while holding the index's lock in ``mode``."""
    return lambda self, *args: _holding(self._index_path + ".lock", mode, method, self, *args)


_compiling = set()     # the compile locks this process holds (compiles nest)


def _one_compiler(compile):
    """``Dispatcher.compile`` run while holding a lock beside the function's index, one per
    signature, so that of several processes needing one function, one compiles it and the others
    wait, then load it from the cache (Numba's ``compile`` looks there first): the cold-start
    helper and the training process meet without compiling the same kernel twice over. Compiles
    nest only down the call graph (a kernel's callees, a loop's body), which has no cycles, so the
    locks cannot deadlock; a lock this process holds already is not taken again."""
    import fcntl
    import hashlib
    from numba.core import sigutils

    def locked(self, sig, path):
        _compiling.add(path)
        try:
            return compile(self, sig)
        finally:
            _compiling.discard(path)

    def run(self, sig):
        index = getattr(getattr(getattr(self, "_cache", None), "_cache_file", None), "_index_path", None)
        if index is None:                           # not cached: nothing to wait for
            return compile(self, sig)
        args = str(tuple(sigutils.normalize_signature(sig)[0]))
        path = f"{index}.{hashlib.sha1(args.encode()).hexdigest()[:16]}.compiling"
        if path in _compiling:
            return compile(self, sig)
        return _holding(path, fcntl.LOCK_EX, locked, self, sig, path)
    return run


def install():
    """Wrap ``IndexDataCacheFile.save`` and ``load`` in the lock, and ``Dispatcher.compile`` in
    the compile lock (once)."""
    global SAFE
    if SAFE:
        return
    try:
        import fcntl
        from numba.core.caching import IndexDataCacheFile as cls
        from numba.core.dispatcher import Dispatcher
        save, load, compile = cls.save, cls.load, Dispatcher.compile
    except (ImportError, AttributeError):
        return
    if not hasattr(cls, "_open_for_write"):      # not the Numba this was written against
        return
    cls.save, cls.load = _locked(save, fcntl.LOCK_EX), _locked(load, fcntl.LOCK_SH)
    Dispatcher.compile = _one_compiler(compile)
    SAFE = True
