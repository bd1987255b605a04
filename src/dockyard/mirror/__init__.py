"""Mirror lists: keeping local copies of upstream repositories in sync (`mirror:`).

`select` picks the upstream tags a source keeps, `sync` runs one pass over the sources
(copying through `copying.engine.Copier` into the local registry through `core`), and
`schedule` makes each source a job of the server's jobs registry.
"""
