"""Model lifecycle on a running server: live loads and unloads, rollouts, lineage (protocol-free)."""
