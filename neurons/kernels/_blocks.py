"""Parallel loops whose body is a serial kernel called through its address.

A kernel that splits its work into blocks is a ``jit`` function ``body(blk, *args)`` doing block
``blk``'s share (arrays and scalars only), its loop ``_x_blocks = parallel(_x_body)``, and plain
Python that allocates the outputs and calls ``_x_blocks(blocks, args)`` (see ``conv.py``).

Why: Numba compiles a ``prange`` kernel as two functions (the kernel and its outlined loop body)
and links every function they call into both, optimising and emitting the callees' machine code
again in each: the one-pass convolution backward compiled in about 8 s as a parallel kernel.
Called through its address, a body is compiled once, as the plain serial function it is, and is
never linked into anything; the loop around it is a few indirect calls and compiles in well under
a second. With one block (small work) the body is called straight from Python, and no parallel
code is compiled or launched at all.

The address is looked up at run time, once per process and loop, and then kept in a global of
the compiled loop; it is never baked into machine code, so the loops still go into the on-disk
cache. A cached loop depends only on the types of its arguments, which are part of its cache
key, and on its body's name: a body that changes is recompiled and looked up afresh.
"""
import importlib

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from ._config import BLOCKS, pjit


def parallel(body):
    """``run(blocks, args)``: ``body(blk, *args)`` for every ``blk`` in ``range(blocks)``, one block
    per thread through a parallel loop made for ``body``, or one call to ``body`` straight from
    Python when there is a single block (small work: no thread pool, no parallel code compiled).

    The loop names its body by a string, not the function itself: Numba keys a cached closure by
    its pickled cells, and a pickled function is not the same from one process to the next."""
    name = f"{body.py_func.__module__}.{body.py_func.__name__}"

    def each(blocks, args):
        addr = address(name, args)
        failed = np.zeros(blocks, np.uint8)
        for blk in prange(blocks):
            failed[blk] = call_block(addr, blk, args)
        if failed.any():
            raise RuntimeError("a block of a parallel kernel raised (the same call with one block shows why)")

    loop = pjit(each)

    def run(blocks, args):
        if blocks > 1:
            loop(blocks, args)
        else:
            body(0, *args)
    return run


def block_count(items, work=0, minimum=0):
    """How many blocks to split ``items`` into: one per thread (no more than there are items), or
    a single block when ``work`` is below ``minimum``."""
    return max(1, min(BLOCKS, items)) if work >= minimum else 1


def _jit_address(module, name, signature):
    """Where the machine code of ``module.name`` compiled for ``signature`` starts (compiling it,
    or loading it from the cache, first if this process has not yet)."""
    result = getattr(importlib.import_module(module), name).get_compile_result(signature)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def _print_error(pyapi):
    pyapi.builder.call(pyapi._get_function(ir.FunctionType(ir.VoidType(), []), name="PyErr_Print"), [])


def _import(pyapi, name):
    """``PyImport_ImportModule(name)`` (a new reference or NULL)."""
    fn = pyapi._get_function(ir.FunctionType(pyapi.pyobj, [pyapi.cstring]), name="PyImport_ImportModule")
    return pyapi.builder.call(fn, [pyapi.context.insert_const_string(pyapi.builder.module, name)])


def _body_signature(args):
    return types.none(types.intp, *args.types)


@intrinsic
def address(typingctx, body, args):
    """The address of the ``jit`` function named by the string literal ``body``
    (``"module.function"``, taking ``(blk, *args)``) compiled for the types of ``args``, a tuple
    of arrays and scalars. If it cannot be had, the calling kernel raises RuntimeError (after
    printing why)."""
    if not isinstance(body, types.StringLiteral) or not isinstance(args, types.BaseTuple):
        return None
    if any(isinstance(t, types.BaseTuple) for t in args.types):
        raise TypingError("a block function's arguments must be arrays and scalars, not tuples")
    module, _, name = body.literal_value.rpartition(".")
    dispatcher = getattr(importlib.import_module(module), name)
    signature = _body_signature(args)
    dispatcher.get_compile_result(signature)          # compile it now, with its loop

    def codegen(context, builder, sig, llargs):
        voidptr = cgutils.voidptr_t
        slot = cgutils.add_global_variable(builder.module, voidptr, "neurons.block." + name)
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
        return builder.ptrtoint(builder.load(slot), context.get_value_type(types.intp))

    return types.intp(body, args), codegen


@intrinsic
def call_block(typingctx, addr, blk, args):
    """``body(blk, *args)`` for the body at ``addr`` (from ``address(body, args)``); 1 if it raised
    (an exception cannot leave a ``prange`` body, so the loop reports it after the loop), else 0."""
    signature = _body_signature(args)

    def codegen(context, builder, sig, llargs):
        addr_v, blk_v, tup = llargs
        values = [context.cast(builder, blk_v, sig.args[1], types.intp)]
        values += [builder.extract_value(tup, i) for i in range(len(args.types))]
        fnty = context.call_conv.get_function_type(types.none, signature.args)
        fn = builder.inttoptr(addr_v, fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, signature.args, values)
        return builder.zext(status.is_error, context.get_value_type(types.uint8))

    return types.uint8(addr, blk, args), codegen
