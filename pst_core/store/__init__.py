"""The artifact store (zarr entries under Merkle keys, run records) and its upkeep."""
