"""Compatibility matrix: data, loader, rules."""
