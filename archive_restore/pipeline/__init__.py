"""Pipelines: the restoration engine shared by all inputs, and the photo-collection job."""
