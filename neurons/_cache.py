"""Numba's on-disk cache, made safe for several processes compiling at once.

Numba keeps one index file per function (signature -> data file) and writes each file whole, but
adding an entry reads the index, picks the first free data file name and writes both back, with
nothing held in between: two processes that compile different signatures of one function at the
same time can each give their signature the same data file, and the one written last is then
loaded for the other signature. That machine code, called with the wrong argument types,
crashed a process here (a segfault, in a cold-start helper compiling in the opposite order of
the training process, ``_warm.py``); Dask workers and MPI ranks on an empty cache are exposed
the same way. ``install`` wraps Numba's ``save`` and ``load`` in a lock on a file beside the
index (``fcntl.flock``: exclusive to save, shared to load), which makes each one whole.

``SAFE`` says whether the lock is in place (not where ``fcntl`` or these Numba internals are
missing; ``_warm.py`` then starts no helper).
"""
import os

SAFE = False


def _locked(method, mode):
    """``method`` (``save`` or ``load``) run while holding the index's lock in ``mode``; run
    without it where the lock file cannot be made (a read-only cache folder: then nothing is
    saved there either)."""
    import fcntl

    def run(self, *args):
        try:
            fd = os.open(self._index_path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return method(self, *args)
        try:
            fcntl.flock(fd, mode)
            return method(self, *args)
        finally:
            os.close(fd)            # closing releases the lock
    return run


def install():
    """Wrap ``IndexDataCacheFile.save`` and ``load`` in the lock (once)."""
    global SAFE
    if SAFE:
        return
    try:
        import fcntl
        from numba.core.caching import IndexDataCacheFile as cls
        save, load = cls.save, cls.load
    except (ImportError, AttributeError):
        return
    if not hasattr(cls, "_open_for_write"):      # not the Numba this was written against
        return
    cls.save, cls.load = _locked(save, fcntl.LOCK_EX), _locked(load, fcntl.LOCK_SH)
    SAFE = True
