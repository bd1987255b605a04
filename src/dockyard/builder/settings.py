"""`catalogue.yaml`: defaults and per-image settings of a catalogue, validated with pydantic."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.config.settings import yaml_problem
from dockyard.config.types import PositiveDuration
from dockyard.config.yamlfile import load_yaml


class CatalogueError(ValueError):
    """The catalogue cannot be built as it stands; the message names the file at fault."""


class ImageSettings(BaseModel):
    """What one image (or, under `defaults:`, every image) adds to its Dockerfile."""

    model_config = ConfigDict(extra="forbid")

    build_args: dict[str, str] = Field(default_factory=dict)
    platforms: list[str] = Field(default_factory=list)
    tests: list[str] = Field(default_factory=list, description="shell commands run in the image")
    tags: list[str] = Field(default_factory=list, description="extra tags pushed with the image")
    #: how long the image's build may run before it is stopped and the image failed
    build_timeout: PositiveDuration = timedelta(hours=1)
    #: how long each test command may run before it is stopped and the image failed
    test_timeout: PositiveDuration = timedelta(minutes=10)
    skip: bool = False

    def over(self, defaults: ImageSettings) -> ImageSettings:
        """These settings on top of `defaults`: build args merge, the rest replaces."""
        fields = self.model_fields_set
        return ImageSettings(
            build_args={**defaults.build_args, **self.build_args},
            platforms=self.platforms if "platforms" in fields else defaults.platforms,
            tests=self.tests if "tests" in fields else defaults.tests,
            tags=self.tags if "tags" in fields else defaults.tags,
            build_timeout=(self.build_timeout if "build_timeout" in fields
                           else defaults.build_timeout),
            test_timeout=(self.test_timeout if "test_timeout" in fields
                          else defaults.test_timeout),
            skip=self.skip if "skip" in fields else defaults.skip,
        )


class CatalogueSettings(BaseModel):
    """The whole `catalogue.yaml`; every key is optional."""

    model_config = ConfigDict(extra="forbid")

    registry: str | None = None
    image_prefix: str | None = None
    defaults: ImageSettings = Field(default_factory=ImageSettings)
    images: dict[str, ImageSettings] = Field(default_factory=dict)

    def for_image(self, path: str) -> ImageSettings:
        own = self.images.get(path)
        return own.over(self.defaults) if own is not None else self.defaults


def load_settings(root: Path) -> CatalogueSettings:
    """`root/catalogue.yaml` if there is one, else empty settings."""
    file = root / "catalogue.yaml"
    if not file.is_file():
        return CatalogueSettings()
    try:
        raw: Any = load_yaml(file.read_text(encoding="utf-8")) or {}
        return CatalogueSettings.model_validate(raw)
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{file}: not YAML: {yaml_problem(exc)}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CatalogueError(f"{file}: {where}: {err['msg']}") from None
