"""The parts of a Dockerfile the builder reads: bases, stage aliases, COPY/ADD sources."""

from __future__ import annotations

import pytest

from dockyard.builder.dockerfile import DockerfileError, instructions, parse


def test_multi_stage_aliases_are_not_bases() -> None:
    parsed = parse(
        "FROM reg/p-base:t AS build\n"
        "RUN make\n"
        "FROM build AS test\n"
        "FROM --platform=linux/amd64 reg/p-runtime:t\n"
        "COPY --from=build /out /out\n"
        "COPY --from=0 /a /a\n"
        "COPY --from=reg/p-tools:t /bin/tool /bin/tool\n")
    assert parsed.bases == ["reg/p-base:t", "reg/p-runtime:t", "reg/p-tools:t"]
    assert parsed.stages == ["build", "test"]
    assert parsed.sources == []


def test_arg_substitution_in_from() -> None:
    text = ("ARG REGISTRY=reg\nARG FLAVOUR\nARG TAG=latest\n"
            "FROM ${REGISTRY}/p-${FLAVOUR:-bookworm}:$TAG\n")
    assert parse(text).bases == ["reg/p-bookworm:latest"]
    assert parse(text, {"FLAVOUR": "bullseye", "TAG": "t"}).bases == ["reg/p-bullseye:t"]


def test_an_empty_from_after_substitution_is_an_error() -> None:
    with pytest.raises(DockerfileError, match="line 2: FROM \\$\\{BASE\\} is empty"):
        parse("ARG BASE\nFROM ${BASE}\n")


def test_copy_and_add_sources_in_shell_and_json_form() -> None:
    parsed = parse(
        "FROM x\n"
        "# a comment\n"
        "COPY --chown=1:1 web/tools.sources \\\n"
        "     shared/motd /etc/\n"
        'ADD ["shared/a b", "/dst/"]\n'
        "ADD https://example.invalid/f /f\n")
    assert parsed.sources == ["web/tools.sources", "shared/motd", "shared/a b",
                              "https://example.invalid/f"]


def test_continuations_keep_the_first_line_number() -> None:
    got = instructions("FROM x\n\nRUN a \\\n  # inside\n  && b\nCOPY a b\n")
    assert [(i.line, i.keyword, i.args) for i in got] == [
        (1, "FROM", "x"), (3, "RUN", "a && b"), (6, "COPY", "a b")]
