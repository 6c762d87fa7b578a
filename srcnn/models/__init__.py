"""The nets (SRCNN, the LR-space family), their shared ops, model files and references."""
