"""Inventory: Facts about the machine, gathered fast without importing torch."""
