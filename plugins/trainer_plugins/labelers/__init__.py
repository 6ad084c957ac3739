"""Built-in labelers: one module per labeler."""
