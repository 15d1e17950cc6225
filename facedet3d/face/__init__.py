"""Face models: the project's template mesh, UV layout, morphable models (synthetic, BFM2017)."""
