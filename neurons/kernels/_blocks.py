"""Parallel loops whose body is a serial kernel called through its address.

A kernel that splits its work into blocks is a ``jit`` function ``body(blk, *args)`` doing block
``blk``'s share (arrays and scalars only), its loop ``_x_blocks = parallel(_x_body)``, and plain
Python that allocates the outputs and calls ``_x_blocks(blocks, args)`` (``dense.py`` is the shortest example).

Why: Numba compiles a ``prange`` kernel as two functions (the kernel and its outlined loop body)
and links every function they call into both, optimising and emitting the callees' machine code
again in each: the one-pass convolution backward compiled in about 8 s as a parallel kernel.
Called through its address, a body is compiled once, as the plain serial function it is, and is
never linked into anything. Nor is a parallel loop compiled for each body: a body's loop is a
small serial function that packs the body's address and arguments on its stack with a
trampoline that unpacks them (``_packed``), and hands both to the one parallel loop
(``_run_blocks``), which every body shares and which compiles once; a body's loop compiles in about
0.25 s (a ``prange`` loop of its own took 0.8 s: 5.6 s of the demo's cold start for its 7 loops).
With one block (small work) the body is called straight from Python, and no parallel code is
compiled or launched at all.

The address is looked up at run time, once per process and loop, and then kept in a global of
the compiled loop; it is never baked into machine code, so the loops still go into the on-disk
cache. A cached loop depends only on the types of its arguments, which are part of its cache
key, and on its body's name: a body that changes is recompiled and looked up afresh.

``MODE`` says how the loops run:

- ``"address"`` (the default): as above. It reaches into Numba's internals
  (``PythonAPI._get_function``, ``Dispatcher.overloads``, ``fndesc.llvm_func_name``,
  ``call_conv.call_function``, ``parallel._launch_threads``), and a Numba upgrade has broken it
  before. So import checks, by name only, that they exist, and a loop that fails to build
  although its body compiles alone switches every loop to ``"prange"``; either way with a
  warning.
- ``"prange"`` (``NEURONS_BLOCKS=prange``): the same bodies on the same blocks, run by a plain
  ``@njit(parallel=True)`` loop, so the same bits. Each such loop takes seconds to compile (its
  body is linked into it twice) and is never cached on disk: it closes over its body, which Numba
  cannot cache.
- ``"python"`` (``NUMBA_DISABLE_JIT=1``): a Python ``for`` over the blocks, to step through a
  kernel in pdb or measure its coverage.

A body's exception cannot leave a parallel loop (its threads have no caller to raise it to), so
the loop returns the first block that failed and ``run`` runs that block again, alone, from
Python, where the body's own exception surfaces with its own message.
"""
import hashlib
import importlib
import warnings

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.core.typing import Signature
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from . import _blocks_mode
from ._config import BLOCKS, jit, pjit


def _missing_internals():
    """The Numba internals the address path uses that this Numba lacks, checked by name only:
    this runs at import, where nothing may be compiled."""
    try:
        from numba.core import base, callconv, codegen, compiler, dispatcher, funcdesc, pythonapi
        from numba.np.ufunc import parallel
    except ImportError as error:
        return [str(error)]
    needs = [
        (pythonapi.PythonAPI, "_get_function gil_ensure gil_release object_getattr_string call_function_objargs "
                              "long_as_voidptr string_from_string decref serialize_object unserialize"),
        (callconv.CPUCallConv, "call_function get_function_type return_user_exc return_status_propagate"),
        (dispatcher.Dispatcher, "compile"),
        (compiler.CompileResult, "fndesc library"),
        (funcdesc.FunctionDescriptor, "llvm_func_name"),
        (codegen.JITCodeLibrary, "get_pointer_to_function"),
        (base.BaseContext, "get_python_api insert_const_string cast get_value_type make_tuple"),
        (cgutils, "add_global_variable is_null voidptr_t alloca_once gep_inbounds"),
        (parallel, "_launch_threads"),
    ]
    return [f"{owner.__name__}.{attr}" for owner, attrs in needs for attr in attrs.split()
            if not hasattr(owner, attr)]


def _start_mode():
    mode = _blocks_mode()
    missing = _missing_internals() if mode == "address" else []
    if missing:
        warnings.warn(f"neurons: Numba {numba.__version__} has no {', '.join(missing)}: parallel kernels run "
                      "as plain prange loops (NEURONS_BLOCKS=prange)", RuntimeWarning, stacklevel=2)
        return "prange"
    return mode


MODE = _start_mode()


def parallel(body):
    """``run(blocks, args)``: ``body(blk, *args)`` for every ``blk`` in ``range(blocks)``, one block
    per thread through a parallel loop made for ``body`` (see ``MODE``), or one call to ``body``
    straight from Python when there is a single block (small work: no thread pool, no parallel
    code compiled). A block that raises raises its own exception from ``run``. In the ``"python"``
    mode the blocks run one after the other, in order.

    The address loop names its body by a string, not the function itself: Numba keys a cached
    closure by its pickled cells, and a pickled function is not the same from one process to the
    next."""
    py_func = getattr(body, "py_func", body)        # a plain function under NUMBA_DISABLE_JIT
    name = f"{py_func.__module__}.{py_func.__name__}"
    loops = {}

    def loop(mode):
        if mode not in loops:
            loops[mode] = _address_loop(name) if mode == "address" else _prange_loop(body)
        return loops[mode]

    def run(blocks, args):
        if blocks <= 1:
            body(0, *args)
            return
        mode = MODE
        if mode == "python":
            _check_args(args)
            for blk in range(blocks):
                body(blk, *args)
            return
        try:
            failed = loop(mode)(blocks, args)
        except Exception as error:
            # a body that compiles alone, in a loop that does not: the address machinery broke
            # (an untested Numba); nothing has run yet, so the prange loop can do the work
            if mode != "address" or _callers_fault(body, args):
                raise
            _fall_back(error)
            failed = loop("prange")(blocks, args)
        if failed >= 0:
            body(failed, *args)         # alone, from Python: the body's own exception
            raise RuntimeError(f"{name} failed on block {failed} of {blocks} in a parallel loop, "
                               "but not when that block ran again alone")
    return run


def block_count(items, work=0, minimum=0):
    """How many blocks to split ``items`` into: one per thread (no more than there are items), or
    a single block when ``work`` is below ``minimum``."""
    return max(1, min(BLOCKS, items)) if work >= minimum else 1


# the same rule inside kernels (``chain.py`` splits its products as the layers' own calls do)
block_count_in_kernels = jit(block_count)


def launch():
    """Start Numba's thread pool, before compiled code that calls the shared parallel loop is
    loaded: older Numbas (0.61) do not start it when loading a function whose linked code holds a
    parfor, and that code then crashes."""
    from numba.np.ufunc.parallel import _launch_threads
    _launch_threads()


def _address_loop(name):
    def each(blocks, args):
        tramp, data = _packed(address(name, args), args)    # (address refuses tuples among args)
        return _run_blocks(blocks, tramp, data)
    from . import _cached_here
    launch()        # the loop's cached machine code holds the parallel loop it calls
    with _cached_here():        # the package's keyed cache folder (kernels/__init__.py)
        return jit(each)


@pjit
def _run_blocks(blocks, tramp, data):
    """The one parallel loop of every address loop: ``tramp(blk, data)`` for each block, ``tramp``
    a trampoline that ``_packed`` made, which calls the body on the arguments ``data`` points to;
    the first block that failed, or -1. One parfor compiled once (about 0.5 s) instead of one per
    body (0.8 s each)."""
    failed = np.zeros(blocks, np.uint8)
    for blk in prange(blocks):
        failed[blk] = _call_trampoline(tramp, blk, data)
    return _first(failed)


@jit(inline="always")
def run_at(body, blocks, args):
    """``body(blk, *args)`` for every ``blk`` in ``range(blocks)``, one block per thread in the shared
    parallel loop, from compiled code: ``body`` the address of a block function compiled for
    ``(intp, *args)``'s types (``address``, ``machine_code``). A block that raises raises its own
    exception here, as from ``parallel``'s loops (run again alone). The loop is called by address:
    linked in, its parfor would compile again for every caller."""
    tramp, data = _packed(body, args)
    failed = kernel("neurons.kernels._blocks._run_blocks", (blocks, tramp, data))
    if failed >= 0:
        call_at(body, (failed,) + args, None)
        raise RuntimeError("a block failed in a parallel loop, but not when it ran again alone")


_TRAMPOLINE = ir.FunctionType(ir.IntType(8), [ir.IntType(64), cgutils.voidptr_t])


@intrinsic
def _call_trampoline(typingctx, tramp, blk, data):
    def codegen(context, builder, sig, llargs):
        fn = builder.inttoptr(llargs[0], _TRAMPOLINE.as_pointer())
        return builder.call(fn, [context.cast(builder, llargs[1], sig.args[1], types.int64),
                                 builder.inttoptr(llargs[2], cgutils.voidptr_t)])
    return types.uint8(tramp, blk, data), codegen


@intrinsic
def _packed(typingctx, addr, args):
    """``(trampoline, data)``: ``data`` the address of a copy of ``(addr, args)`` in the caller's
    frame, ``trampoline`` that of a function (made in the caller's module, one per argument
    types) taking ``(blk, data)`` that calls the body at ``addr`` as ``body(blk, *args)`` and
    returns 1 if it raised, else 0 (an exception cannot leave a ``prange`` body, so the loop
    reports it after the loop)."""
    signature = _body_signature(args)

    def codegen(context, builder, sig, llargs):
        packty = ir.LiteralStructType([context.get_value_type(types.intp), context.get_value_type(args)])
        pack = cgutils.alloca_once(builder, packty)
        builder.store(llargs[0], cgutils.gep_inbounds(builder, pack, 0, 0))
        builder.store(llargs[1], cgutils.gep_inbounds(builder, pack, 0, 1))
        key = "neurons.trampoline." + hashlib.sha1(str(signature.args).encode()).hexdigest()[:16]
        fn = builder.module.globals.get(key)
        if fn is None:
            fn = ir.Function(builder.module, _TRAMPOLINE, key)
            fn.linkage = "internal"
            inner = ir.IRBuilder(fn.append_basic_block("entry"))
            blk, data = fn.args
            packed = inner.bitcast(data, packty.as_pointer())
            addr_v = inner.load(cgutils.gep_inbounds(inner, packed, 0, 0))
            tup = inner.load(cgutils.gep_inbounds(inner, packed, 0, 1))
            values = [blk] + [_unowned(context, inner, t, inner.extract_value(tup, i))
                              for i, t in enumerate(args.types)]
            status, _ = _invoke(context, inner, addr_v, types.none, signature.args, values)
            inner.ret(inner.zext(status.is_error, ir.IntType(8)))
        intp = context.get_value_type(types.intp)
        return context.make_tuple(builder, sig.return_type, [builder.ptrtoint(fn, intp), builder.ptrtoint(pack, intp)])

    return types.UniTuple(types.intp, 2)(addr, args), codegen


def _unowned(context, builder, ty, value):
    """An array argument as the body sees it: without its owner (meminfo and parent null), so that
    no view the body takes of it counts references. The caller holds the array for the call; the
    counts were atomic adds on one word that every block's views of a shared input hit, and the
    threads' cores took that cache line from each other on every row (the 1 -> 8 filter
    convolution's backward at batch 32: 0.14 ms a block alone, 0.30 ms for two blocks on two
    threads)."""
    if not isinstance(ty, types.Array):
        return value
    array = context.make_array(ty)(context, builder, value)
    array.meminfo = cgutils.get_null_value(array.meminfo.type)
    array.parent = cgutils.get_null_value(array.parent.type)
    return array._getvalue()


def _prange_loop(body):
    @jit(cache=False)
    def call(blk, args):
        body(blk, *args)

    @jit(cache=False)
    def guarded(blk, args):
        # a try inside the prange makes Numba run the loop serially; an exception let out of
        # it was seen lost, or turned into a SystemError
        try:
            call(blk, args)
        except Exception:
            return 1
        return 0

    def each(blocks, args):
        _check_args(args)
        failed = np.zeros(blocks, np.uint8)
        for blk in prange(blocks):
            failed[blk] = guarded(blk, args)
        return _first(failed)
    return pjit(each, cache=False)


@jit
def _first(failed):
    """The first block flagged in ``failed``, or -1."""
    for blk in range(failed.shape[0]):
        if failed[blk]:
            return blk
    return -1


def _callers_fault(body, args):
    """Whether a loop that failed did so for its body's or its arguments' own reasons (else the
    address machinery is to blame): the body alone does not compile for these arguments."""
    try:
        _check_args(args)
        body.compile((types.intp,) + tuple(numba.typeof(a) for a in args))
    except Exception:
        return True
    return False


def _fall_back(error):
    global MODE
    MODE = "prange"
    warnings.warn(f"neurons: a parallel loop could not be built by address ({type(error).__name__}: {error}); "
                  "every parallel kernel now runs as a plain prange loop", RuntimeWarning, stacklevel=3)


_NOT_TUPLES = "a block function's arguments must be arrays and scalars, not tuples"


def _check_args(args):
    """Refuse a tuple among a body's arguments (in a compiled loop: when it compiles)."""
    if any(isinstance(a, tuple) for a in args):
        raise TypeError(_NOT_TUPLES)


@overload(_check_args)
def _check_args_typed(args):
    if any(isinstance(t, types.BaseTuple) for t in args.types):
        raise TypingError(_NOT_TUPLES)
    return lambda args: None


def _compiled(module, name, argtypes):
    """The compile result of the jit function ``module.name`` for these argument types, compiled
    or loaded from the cache first if this process has not yet: keyed, in the cache too, by the
    argument types alone, as a call from Python keys it. (``get_compile_result`` keys it by the
    whole signature in newer Numbas: a body first compiled by a call from Python, as a single
    block, was then compiled again for its loop, in every process that needed the loop first.)"""
    dispatcher = getattr(importlib.import_module(module), name)
    argtypes = tuple(argtypes)
    if argtypes not in dispatcher.overloads:
        dispatcher.compile(argtypes)
    return dispatcher.overloads[argtypes]


def _machine_code(module, name, argtypes):
    """``(address, return type)`` of the machine code of ``module.name`` compiled for
    ``argtypes`` (compiling it, or loading it from the cache, first if this process has not yet)."""
    result = _compiled(module, name, argtypes)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name), result.signature.return_type


def _jit_address(module, name, signature):
    """Where the machine code of ``module.name`` compiled for ``signature`` starts."""
    return _machine_code(module, name, signature.args)[0]


def machine_code(fn, argtypes):
    """``(address, return type)`` of the jit function ``fn`` compiled for ``argtypes`` (Numba
    types): for ``call_at``, which then calls it with nothing compiled for the choice."""
    return _machine_code(fn.__module__, fn.__name__, argtypes)


def _print_error(pyapi):
    pyapi.builder.call(pyapi._get_function(ir.FunctionType(ir.VoidType(), []), name="PyErr_Print"), [])


def _import(pyapi, name):
    """``PyImport_ImportModule(name)`` (a new reference or NULL)."""
    fn = pyapi._get_function(ir.FunctionType(pyapi.pyobj, [pyapi.cstring]), name="PyImport_ImportModule")
    return pyapi.builder.call(fn, [pyapi.context.insert_const_string(pyapi.builder.module, name)])


def _body_signature(args):
    return types.none(types.intp, *args.types)


def _load_address(context, builder, module, name, signature):
    """Code that loads the address of the jit function ``module.name`` compiled for
    ``signature``: looked up once per process (``_jit_address``, with the GIL) into a global of
    the calling function's module, one per function and signature. If it cannot be had, the
    calling kernel raises RuntimeError (after printing why)."""
    voidptr = cgutils.voidptr_t
    key = "neurons.address." + hashlib.sha1(f"{module}.{name}{signature.args}".encode()).hexdigest()[:16]
    slot = builder.module.globals.get(key)
    if slot is None:
        slot = cgutils.add_global_variable(builder.module, voidptr, key)
        slot.linkage = "internal"
        slot.initializer = ir.Constant(voidptr, None)
    with builder.if_then(cgutils.is_null(builder, builder.load(slot)), likely=False):
        pyapi = context.get_python_api(builder)

        def text(value):
            return pyapi.string_from_string(context.insert_const_string(builder.module, value))

        gil = pyapi.gil_ensure()
        mod = _import(pyapi, __name__)
        with builder.if_else(cgutils.is_null(builder, mod), likely=False) as (failed, ok):
            with failed:
                _print_error(pyapi)
            with ok:
                lookup = pyapi.object_getattr_string(mod, "_jit_address")
                name_mod, name_fn = text(module), text(name)
                sig_obj = pyapi.unserialize(pyapi.serialize_object(signature))
                result = pyapi.call_function_objargs(lookup, (name_mod, name_fn, sig_obj))
                for obj in (lookup, name_mod, name_fn, sig_obj, mod):
                    pyapi.decref(obj)
                with builder.if_else(cgutils.is_null(builder, result), likely=False) as (bad, good):
                    with bad:
                        _print_error(pyapi)
                    with good:
                        builder.store(pyapi.long_as_voidptr(result), slot)
                        pyapi.decref(result)
        pyapi.gil_release(gil)
        with builder.if_then(cgutils.is_null(builder, builder.load(slot)), likely=False):
            context.call_conv.return_user_exc(builder, RuntimeError, (f"no machine code for {module}.{name}",))
    return builder.load(slot)


@intrinsic
def address(typingctx, body, args):
    """The address of the ``jit`` function named by the string literal ``body``
    (``"module.function"``, taking ``(blk, *args)``) compiled for the types of ``args``, a tuple
    of arrays and scalars (see ``_load_address``)."""
    if not isinstance(body, types.StringLiteral) or not isinstance(args, types.BaseTuple):
        return None
    if any(isinstance(t, types.BaseTuple) for t in args.types):
        raise TypingError(_NOT_TUPLES)      # here, not by _check_args' overload: one function less to compile
    module, _, name = body.literal_value.rpartition(".")
    signature = _body_signature(args)
    _compiled(module, name, signature.args)             # compile it now, with its loop

    def codegen(context, builder, sig, llargs):
        return builder.ptrtoint(_load_address(context, builder, module, name, signature),
                                context.get_value_type(types.intp))

    return types.intp(body, args), codegen


def _invoke(context, builder, callee, restype, argtys, values):
    """Code calling the jit function at ``callee`` (a pointer or an intp) on ``values`` of
    ``argtys``: its ``(status, result)``."""
    fnty = context.call_conv.get_function_type(restype, argtys).as_pointer()
    fn = builder.inttoptr(callee, fnty) if isinstance(callee.type, ir.IntType) else builder.bitcast(callee, fnty)
    return context.call_conv.call_function(builder, fn, restype, argtys, values)


def _call(context, builder, callee, restype, args, argtys, tup):
    """Code calling the function at ``callee`` with the tuple ``tup`` of ``args``' types as
    ``argtys``, returning its ``restype`` value, its exception propagated."""
    values = [context.cast(builder, builder.extract_value(tup, i), t, u)
              for i, (t, u) in enumerate(zip(args.types, argtys))]
    status, result = _invoke(context, builder, callee, restype, argtys, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return result


@intrinsic
def kernel(typingctx, fn, args):
    """``fn(*args)`` for the jit function named by the string literal ``fn``
    (``"module.function"``), through its own machine code for these argument types (literal
    types taken as their plain ones, as from Python): the code a call from Python runs, not a copy
    compiled into the caller (``chain.py`` says why that matters). Its exceptions propagate."""
    if not isinstance(fn, types.StringLiteral) or not isinstance(args, types.BaseTuple):
        return None
    module, _, name = fn.literal_value.rpartition(".")
    argtys = tuple(types.unliteral(t) for t in args.types)
    signature = Signature(None, argtys, None)        # the return type: whatever the function's is
    restype = _compiled(module, name, argtys).signature.return_type

    def codegen(context, builder, sig, llargs):
        return _call(context, builder, _load_address(context, builder, module, name, signature), restype, args,
                     argtys, llargs[1])

    return restype(fn, args), codegen


@intrinsic
def call_at(typingctx, addr, args, like):
    """``fn(*args)`` for the jit function whose machine code starts at ``addr`` (from
    ``machine_code``, compiled for exactly the types of ``args``), returning a value of ``like``'s
    type (``None``: nothing); its exceptions propagate. Which function runs is chosen at run time,
    so no branch of a choice compiles a function it does not call (``chain.py``). The caller
    vouches for the types: a function compiled for others is a crash, not an error."""
    if not isinstance(addr, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    argtys = tuple(types.unliteral(t) for t in args.types)
    restype = types.none if isinstance(like, types.NoneType) else types.unliteral(like)

    def codegen(context, builder, sig, llargs):
        return _call(context, builder, llargs[0], restype, args, argtys, llargs[1])

    return restype(addr, args, like), codegen
