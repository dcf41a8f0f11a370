"""The bottom layer: helpers every package may use (atomic file writes). Imports nothing of pneumoscan but errors."""
