"""Device mesh, logical-axis sharding rules, sharded initialisation and multi-process start-up."""
