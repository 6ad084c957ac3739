"""Built-in plugins that add `trainer` commands."""
