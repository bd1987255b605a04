"""Talking to other registries: an async distribution-API client and its authentication.

Used by `dockyard rm`, `dockyard copy` and the replica's follower, and meant for the
server's other jobs (sync, pull-through): nothing here knows about the local stores.
"""
