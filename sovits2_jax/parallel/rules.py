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
    ("conv_out", "tensor"),
    ("conv_in", "fsdp"),
    ("layers", None),
    ("norm", None),
)


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor))


def sharding_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(rules=SHARDING_RULES))
