"""Stage `evaluate`: the paper's Fig. 4–8 as PNG grids, an animation, every stage's figures in one
metrics.json, and a self-contained report.html."""
