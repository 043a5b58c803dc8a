"""Weight normalisation (torch.nn.utils.weight_norm semantics) as a wrapper around a kernel-carrying layer.

``WeightNorm(layer, dim=0)`` reparameterises ``layer.kernel`` as ``g * v / ||v||``: ``v`` stays in the wrapped
layer's ``kernel`` param and ``g`` is a vector over the kept dimension. ``dim`` counts in torch's weight layout
(0 = output channels of Conv1d/Conv2d, input channels of ConvTranspose1d), as ``torch.nn.utils.weight_norm`` does;
the norm is taken over every other dimension. The wrapped layer must accept a ``kernel=`` override in its call
(``Conv1d``, ``ConvTranspose1d``, ``Conv2d`` do). ``fold_weight_norm(model)`` bakes ``g`` into the kernels for
inference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.nn.conv2d import Conv2d
from sovits2_jax.nn.conv_transpose import ConvTranspose1d
from sovits2_jax.nn.layers import Conv1d

# For each layer type: torch weight dim i is our kernel axis TORCH_KERNEL_AXES[type][i].
TORCH_KERNEL_AXES: dict[type, tuple[int, ...]] = {
    Conv1d: (2, 1, 0),  # torch [O, I, K]      <-> ours [K, I, O]
    ConvTranspose1d: (1, 2, 0),  # torch [I, O, K]  <-> ours [K, I, O]
    Conv2d: (3, 2, 0, 1),  # torch [O, I, kh, kw] <-> ours [kh, kw, I, O]
}


def torch_dim_to_axis(layer: nnx.Module, dim: int) -> int:
    """Our kernel axis that holds torch weight dimension ``dim`` of ``layer``."""
    axes = getattr(layer, "torch_kernel_axes", None) or TORCH_KERNEL_AXES.get(type(layer))
    if axes is None:
        raise TypeError(f"weight norm: no torch kernel layout known for {type(layer).__name__}")
    if not 0 <= dim < len(axes):
        raise ValueError(f"weight norm: dim={dim} out of range for a {len(axes)}-d {type(layer).__name__} weight")
    return axes[dim]


def norm_except_axis(v: jax.Array, axis: int | None) -> jax.Array:
    """L2 norm of ``v`` over every axis but ``axis`` (all axes when None), kept broadcastable to ``v``."""
    if axis is None:
        return jnp.sqrt(jnp.sum(jnp.square(v)))
    others = tuple(a for a in range(v.ndim) if a != axis)
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=others, keepdims=True))


def weight_from_gv(g: jax.Array, v: jax.Array, axis: int | None) -> jax.Array:
    """``v * (g / ||v||)`` with g [n] laid along ``axis`` of v (scalar g when axis is None)."""
    if axis is not None:
        shape = [1] * v.ndim
        shape[axis] = v.shape[axis]
        g = g.reshape(shape)
    return v * (g / norm_except_axis(v, axis))


class WeightNorm(nnx.Module):
    """Weight-normalised ``layer``; params ``g`` [n] (or scalar for dim None) and ``layer.kernel`` (= v)."""

    def __init__(self, layer: nnx.Module, *, dim: int | None = 0):
        kernel = getattr(layer, "kernel", None)
        if not isinstance(kernel, nnx.Param):
            raise TypeError(f"weight norm: {type(layer).__name__} has no `kernel` param to normalise")
        self.layer = layer
        self.dim = dim
        self.axis = None if dim is None else torch_dim_to_axis(layer, dim)
        self.folded = False
        v = kernel[...]
        g = norm_except_axis(v, self.axis)
        axes = getattr(kernel, "logical_axes", None)
        if self.axis is None:
            self.g = nnx.Param(g.reshape(()), logical_axes=())
        else:
            g = g.reshape(v.shape[self.axis])
            self.g = nnx.Param(g, logical_axes=(axes[self.axis],) if axes else (None,))

    def weight(self) -> jax.Array:
        """The effective kernel in our layout."""
        if self.folded:
            return self.layer.kernel[...]
        return weight_from_gv(self.g[...], self.layer.kernel[...], self.axis)

    def __call__(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        if self.folded:
            return self.layer(x, *args, **kwargs)
        return self.layer(x, *args, kernel=self.weight(), **kwargs)

    def fold(self) -> None:
        """Bakes ``g`` into ``layer.kernel`` and drops ``g`` (inference; the param tree loses ``g``)."""
        if self.folded:
            return
        self.layer.kernel[...] = self.weight()
        self.g = None
        self.folded = True


def weight_norm(layer: nnx.Module, dim: int | None = 0) -> WeightNorm:
    """Wraps ``layer`` in weight normalisation (``torch.nn.utils.weight_norm(layer, dim=dim)``)."""
    return WeightNorm(layer, dim=dim)


def fold_weight_norm(model: nnx.Module) -> nnx.Module:
    """Folds every ``WeightNorm`` inside ``model`` in place and returns it (outputs are unchanged)."""
    for _, node in list(nnx.iter_graph(model)):
        if isinstance(node, WeightNorm):
            node.fold()
    return model
