"""Looking inside a model: bias probes (bias.py, crows_pairs.py) and attention maps (attention.py)."""
