"""The built-in plugins of pair-trainer: one module per component, registered through the same hooks
a third-party plugin uses."""
