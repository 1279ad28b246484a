"""Lottery tickets for PyTorch models, constrained to N:M (torch is imported lazily)."""
