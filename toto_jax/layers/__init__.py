"""Layers shared by the Toto model families: dense projections, RMS norms, the attention core."""
