"""Byte storage drivers: one small async interface, one shared test suite."""

from dockyard.drivers.base import Driver, DriverError, Writer

__all__ = ["Driver", "DriverError", "Writer"]
