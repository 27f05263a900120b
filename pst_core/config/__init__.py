"""The parameters: each stage's model (schema), presets, --set and files, the reference table."""
