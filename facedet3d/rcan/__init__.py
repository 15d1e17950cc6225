"""Stage `train_rcan`: a one-channel RCAN ×4 on detail patches (paper §3.2, Eq. 19) and its
tiled twice-applied inference (Eq. 20)."""
