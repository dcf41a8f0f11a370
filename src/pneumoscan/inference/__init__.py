"""Inference shared by the CLI, the REST API and the web page: image in, probability, label and threshold out."""
