"""What an error says to clients by default: the first paragraph of its class's
docstring, never the developers' notes below it (a 503 from a failed storage backend
sent DriverError's three paragraphs about Retry-After and logging)."""

from __future__ import annotations

import inspect

import dockyard.oci.errors as errors
from dockyard.drivers.base import DriverError
from dockyard.oci.errors import RegistryError


def test_a_driver_error_says_the_generic_storage_message() -> None:
    exc = DriverError("S3 bucket: ConnectionResetError: reset by peer")
    assert exc.message == "the registry's storage is unavailable; try again later"
    assert str(exc) == "S3 bucket: ConnectionResetError: reset by peer"  # for the log


def test_every_default_message_is_one_line() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, RegistryError)] + [DriverError]
    assert len(classes) > 10
    for cls in classes:
        made = cls.__new__(cls)
        RegistryError.__init__(made)  # the default, whatever the class's own arguments
        assert made.message, cls.__name__
        assert "\n" not in made.message, (cls.__name__, made.message)
