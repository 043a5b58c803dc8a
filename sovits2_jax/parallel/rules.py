"""The ordered logical-axis -> mesh-axis rules table the config files use (configs/common.py), and its check."""

from sovits2_jax.parallel.mesh import MESH_AXES
from sovits2_jax.validation import check

# Ordered: for each array dimension the first rule whose mesh axes are free and divide it wins.
SHARDING_RULES = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_vocab", "tensor"),
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    # Conv kernels are split on output channels only: with the input channels on fsdp as well, XLA's SPMD
    # partitioner returns wrong gradients for chained k>1 convolutions on a data x fsdp x tensor mesh
    # (tests/unit/test_sharding.py::test_chained_conv_gradients_on_3d_mesh).
    ("conv_out", "tensor"),
    ("layers", None),
    ("norm", None),
)


def validate_rules(rules, prefix: str = "config.sharding.rules") -> None:
    """Checks a rules table: (logical_name, mesh_axes) pairs over MESH_AXES; ConfigError names the rule."""
    for i, rule in enumerate(rules):
        check(len(rule) == 2, f"{prefix}[{i}]={rule!r} must be (logical_name, mesh_axes)")
        axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        for a in axes:
            check(a is None or a in MESH_AXES, f"{prefix}[{i}]: unknown mesh axis {a!r}")
