"""Stage `train_renderer` (and its ablation): the rendering network R of paper §3.3."""
