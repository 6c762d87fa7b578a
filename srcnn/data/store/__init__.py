"""The Zarr v3 patch store: arrays, root attributes, the source table, completion markers."""
