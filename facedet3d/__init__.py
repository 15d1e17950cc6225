"""FaceDet3D: facial expressions with 3D geometric detail prediction — a Snakemake pipeline."""

__version__ = "0.1.0"
