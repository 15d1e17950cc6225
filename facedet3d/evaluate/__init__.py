"""Evaluation: metrics, image grids, the HTML report."""
