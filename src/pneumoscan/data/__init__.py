"""Data: reading images, data sources (folders, manifests, public collections), splits, preprocessing, caching."""
