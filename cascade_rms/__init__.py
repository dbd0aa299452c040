"""The modules the scripts share: data, training, generation and evaluation (README: Layout)."""
