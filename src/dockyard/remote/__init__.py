"""Talking to other registries: an async distribution-API client and its authentication.

Used by `dockyard rm` and `dockyard copy`, and meant for the server's own jobs (sync,
pull-through, replica): nothing here knows about the local stores.
"""
