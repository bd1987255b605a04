"""Typed settings: the YAML config file, environment overrides and validation."""

from dockyard.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
