"""The FFI call of fagen's handlers, with batch partitioning.

jax.ffi.ffi_call cannot attach the two lowering attributes that XLA's batch
partitioner needs (the "num_batch_dims" frontend attribute, and under Shardy
an sdy.sharding_rule), so the dense calls use their own primitive: jax.ffi's
abstract evaluation, vmap rule and lowering, plus those attributes.  Every
operand and result of a dense call has the same leading batch dims (q, k, v,
o, dout, dq, dk, dv [lead..., seq, heads, head_dim]; lse [lead..., heads,
seq]; lengths [lead...]; slopes [lead..., heads]; workspace [lead...,
bytes]), so under a sharded jit XLA splits the call along them and runs the
handler on each device's rows; every other dim is marked as needing
replication.  The primitive builds on jax internals (jax._src.ffi and the
Shardy rule helpers of JAX 0.11); where they are missing, calls fall back to
jax.ffi.ffi_call without partitioning (partitioned() says which).
"""
import functools
import string

import jax

try:
    from jax._src import core as _core
    from jax._src import dispatch as _dispatch
    from jax._src import ffi as _jffi
    from jax._src.interpreters import batching as _batching
    from jax._src.interpreters import mlir as _mlir
    from jax._src.custom_partitioning_sharding_rule import (
        sdy_sharding_rule_to_mlir as _sdy_to_mlir, str_to_sdy_sharding_rule as _sdy_rule)
    _INTERNALS = True
except ImportError:  # another jax: plain ffi_call
    _INTERNALS = False


def partitioned():
    """True when dense calls carry the batch-partitioning attributes."""
    return _INTERNALS


def _rule(ctx, nb):
    """'... a b, ... c -> ... d' with every non-batch factor needing replication."""
    letters = iter(string.ascii_letters)
    factors = []

    def side(avals):
        parts = []
        for a in avals:
            names = [next(letters) for _ in range(len(a.shape) - nb)]
            factors.extend(names)
            parts.append(" ".join((["..."] if nb else []) + names))
        return ", ".join(parts)

    text = side(ctx.avals_in) + " -> " + side(ctx.avals_out)
    rule = _sdy_rule(text, need_replication_factors=tuple(factors))
    mc = ctx.module_context
    ins, _ = _mlir.ir_tree_registry.flatten([_mlir.aval_to_ir_types(mc, a) for a in ctx.avals_in])
    outs, _ = _mlir.ir_tree_registry.flatten([_mlir.aval_to_ir_types(mc, a)
                                              for a in ctx.avals_out])
    return _sdy_to_mlir(rule, ins, outs)


if _INTERNALS:
    _p = _core.Primitive("fagen_attention_ffi")
    _p.multiple_results = True
    _dispatch.simple_impl(_p)
    _p.def_effectful_abstract_eval(functools.partial(_jffi.ffi_call_abstract_eval,
                                                     has_side_effect=False))
    _batching.primitive_batchers[_p] = functools.partial(_jffi.ffi_batching_rule, _p)

    def _lower(ctx, *operands, target_name, attributes, **_):
        nb = len(ctx.avals_in[0].shape) - 3  # q's leading dims
        extra = {"mhlo.frontend_attributes": _mlir.ir_attribute({"num_batch_dims": str(nb)})}
        if jax.config.jax_use_shardy_partitioner:
            extra["sdy.sharding_rule"] = _rule(ctx, nb)
        rule = jax.ffi.ffi_lowering(target_name, extra_attributes=extra)
        return rule(ctx, *operands, **dict(attributes))

    _mlir.register_lowering(_p, _lower, platform="cuda")

    def _no_lowering(ctx, *operands, target_name, **_):
        raise NotImplementedError(f"fagen_jax: {target_name} runs on CUDA GPUs only")

    _mlir.register_lowering(_p, _no_lowering)


def call(target, out_types, args, attrs, *, partitionable, vmap_method="broadcast_all"):
    """The results of target(*args, **attrs), out_types as jax.ffi.ffi_call's."""
    if not (partitionable and _INTERNALS):
        return jax.ffi.ffi_call(target, out_types, vmap_method=vmap_method)(*args, **attrs)
    avals = tuple(_core.ShapedArray(t.shape, t.dtype) for t in out_types)
    return tuple(_p.bind(*args, result_avals=avals, vmap_method=vmap_method,
                         target_name=target, attributes=tuple(sorted(attrs.items()))))
