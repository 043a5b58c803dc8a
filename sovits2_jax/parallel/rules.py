"""Default mesh and the ordered logical-axis -> mesh-axis rules table used by the config files."""

import ml_collections

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


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def sharding_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(rules=SHARDING_RULES))
