"""Dockyard's load generator: the same scenarios against Dockyard and CNCF Distribution.

`python -m bench` starts each registry fresh for every scenario, drives it with an
aiohttp client (and `wrk` for the manifest request-rate scenario), samples the server's
process tree with psutil, and prints every figure side by side with the ratio
Dockyard / Distribution. See bench/README.md.
"""
