"""Data only: the YAML catalog (see README.md in this folder). No code reads it but hardware/."""
