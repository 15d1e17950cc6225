"""Stage `train_detp` (rule `train_detp`, `facedet3d train-detp`, config section `train_detp`,
results/train_detp/): the detail prediction network DetP and its discriminators (paper §3.2)."""
