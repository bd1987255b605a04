"""The standby replica: follow a primary Dockyard's change feed (`follower.py`)."""
