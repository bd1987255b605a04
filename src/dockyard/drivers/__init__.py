"""Byte storage drivers: one small async interface, one shared test suite."""

from dockyard.drivers.base import Driver, DriverBusy, DriverError, Writer

__all__ = ["Driver", "DriverBusy", "DriverError", "Writer"]
