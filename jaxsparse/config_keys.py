"""The one checker of dotted config keys (`train.steps`, `data.tokenizer`) against a schema.

A schema is a ConfigDict (or any mapping with `keys()`): a section is a node with keys, anything
else is a value. `key_problem` says why a key does not name an entry, in one sentence that names
the key, its section and the keys allowed there, with the nearest known key
(`errors.unknown_key_message`). Every caller goes through it: the trainer's and the data CLI's
`--config.<key>=VALUE` overrides (`check_overrides`), a sweep's override keys, and the keys a config
file sets (`check_tree`, used by `validate` of the training and the data config).

`parse_config_flags(argv)` loads `--config=FILE[:args]` with its overrides exactly as a command line
would (ml-collections' own flag parser, on a private flag set), for the callers that need the
file's config alone before checking the overrides against it.

Imports nothing from jaxsparse but `errors` (the floor every package may import).
"""
from __future__ import annotations

import re
from typing import Any

from jaxsparse.errors import ConfigError, unknown_key_message

_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def _is_section(node: Any) -> bool:
    return callable(getattr(node, "keys", None))


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def key_problem(schema: Any, key: str, root: str = "", value: bool = False) -> str | None:
    """None when dotted `key` names an entry of `schema`; else why not, in one sentence.

    root: how the schema's top is named in the sentence (e.g. 'config.data'; '' = the top).
    value: `key` must name a value, not a section (an override sets one value)."""
    node, parts = schema, key.split(".")
    for depth, part in enumerate(parts):
        section = _join(root, *parts[:depth])
        if not _is_section(node):
            return f"{section} is a value, not a section"
        if part not in node.keys():
            return unknown_key_message(section, part, node.keys())
        node = node[part]
    if value and _is_section(node):
        return (f"{_join(root, key)!r} is a section of the config, not a value; override its keys "
                "one by one")
    return None


def override_keys(argv: list[str]) -> list[tuple[str, str]]:
    """(argument, dotted key) of every `--config.<key>[=VALUE]` (or absl's `--noconfig.<key>`)."""
    return [(arg, m.group(1)) for arg in argv if (m := _OVERRIDE.match(arg))]


def check_overrides(schema: Any, argv: list[str]) -> None:
    """Every `--config.<key>=VALUE` of `argv` must name a value of `schema`; else ConfigError
    '--config.<key>=VALUE: <key_problem>'."""
    for arg, key in override_keys(argv):
        problem = key_problem(schema, key, value=True)
        if problem:
            raise ConfigError(f"{arg}: {problem}")


def dotted_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every key of `tree`, sections and values, depth first ('train', 'train.steps', ...)."""
    out = []
    for key in tree.keys():
        out.append(f"{prefix}{key}")
        if _is_section(tree[key]):
            out.extend(dotted_keys(tree[key], f"{prefix}{key}."))
    return out


def check_tree(tree: Any, schema: Any, what: str = "", root: str = "") -> None:
    """Every key `tree` sets, in every section, must name an entry of `schema` (a config file may
    change values, never add keys); else ConfigError '<what>: <key_problem>'."""
    for key in dotted_keys(tree):
        problem = key_problem(schema, key, root)
        if problem:
            raise ConfigError(f"{what}: {problem}" if what else problem)


def parse_config_flags(argv: list[str]) -> Any:
    """The config of `argv` (`[prog, --config=FILE[:args], --config.<key>=VALUE, ...]`), loaded by
    ml-collections' flag parser on a private flag set, locked. Raises what loading raises; a file
    that fails to load can come back as ml-collections' deferred-error object."""
    from absl import flags
    from ml_collections import config_flags

    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "training config", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    values(argv)
    return values.config
