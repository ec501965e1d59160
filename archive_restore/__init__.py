"""archive-restore: restore old photos and videos with degradation codes learned from real faces."""
__version__ = "0.1.0"
