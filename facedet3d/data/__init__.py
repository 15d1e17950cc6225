"""Datasets: the synthetic generator, manifests, per-chunk records, HDF5 shards, loaders."""
