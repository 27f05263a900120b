"""The demo's images: made by images.py (no third-party content), shipped as package data."""
