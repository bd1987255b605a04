"""Settings that are valid but most likely not what the operator meant: said by
`dockyard config check` and logged when `dockyard serve` starts, never refused (a
registry running with them keeps running after an upgrade)."""

from __future__ import annotations

from dockyard.config.settings import Settings


def advice(settings: Settings) -> list[str]:
    """One line per doubtful setting, each naming its key."""
    lines: list[str] = []
    for i, rule in enumerate(settings.retention.rules):
        if rule.repositories == "*":
            lines.append(
                f"retention.rules[{i}].repositories: \"*\" names top-level repositories "
                "only (a * stays within one path component; before the one glob dialect "
                "it crossed '/'); write \"**\" for every repository")
    for i, access in enumerate(settings.auth.access):
        if any("**" in part and part != "**" for part in access.repository.split("/")):
            lines.append(
                f"auth.access[{i}].repository: \"{access.repository}\": a ** inside a "
                "path component is a * (it stays within the component); a ** component "
                "of its own, as in \"team/**\", spans any number of them")
    return lines
