"""Built-in feature sets: one module per set."""
