"""Explanations: Grad-CAM heatmaps and overlays."""
