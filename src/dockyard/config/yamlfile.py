"""YAML as Dockyard reads it (the config file, `DOCKYARD_*` lists, a builder catalogue's
settings, Distribution's config for an import): PyYAML's safe loader, stricter on two
points. A key written twice in one mapping is an error naming it (PyYAML keeps the last
one: a second `auth:` section further down replaced the first, and the registry served
without authentication while `config check` said ok); a merge (`<<: *base`) may still
be overridden. Nesting deeper than the parser can follow is a `YAMLError`, not a
RecursionError traceback."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

MERGE = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing a key twice in one mapping.

    Each mapping is checked once, before PyYAML flattens its merges: flattening puts
    the merged keys in front of the mapping's own (and rewrites an anchored mapping in
    place when another one merges it), so a merged key overridden would read as
    written twice afterwards."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable: the safe loader says so
                    continue
                if duplicate:
                    raise ConstructorError("while reading a mapping", node.start_mark,
                                           f"the key {str(key)[:100]!r} is written twice",
                                           key_node.start_mark)
        super().flatten_mapping(node)


def load_yaml(text: str) -> Any:
    """The document in `text`; `yaml.YAMLError` (one line by `yaml_problem`) when it is
    no YAML, writes a key twice in a mapping, or nests too deeply."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise yaml.YAMLError("the document is nested too deeply") from None
