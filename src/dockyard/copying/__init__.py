"""Copying images between registries and OCI image layouts, digests preserved.

`refs` parses `docker://` and `oci:` references, `ends` gives both kinds one interface
(`Source`, `Destination`), `engine.Copier` walks manifests and moves blobs. Nothing here
is HTTP-server or CLI code: `dockyard copy` and the server's jobs drive the same engine.
"""
