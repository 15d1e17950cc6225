"""Stage `shards` (rule `shards`, `facedet3d shards`, config section `shards`, results/shards/)."""
