"""Dockyard: a container image registry and image builder."""

__version__ = "0.1.0"
