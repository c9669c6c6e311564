"""Flag parsing of the trainer's command line, with every input error as one plain line, exit 2.

Handles `--help` (exit 0, pointing to `--print_config`), resolves `--config=FILE[:args]` once
(`overrides.resolve_config_file`: the current directory, then the project root), refuses an
unknown `--config.<key>` override with the nearest known key (`config_keys.check_overrides`), and
turns what loading a config file can raise (missing file, syntax error, a failing get_config, a bad
argument) into one ConfigError that names the file; `errors.entry_point` prints it and exits 2.
"""
from __future__ import annotations

import re
import sys

from absl import flags

from jaxsparse.config_keys import check_overrides
from jaxsparse.errors import EXIT_OK, ConfigError, entry_point, user_code_error

HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def _print_help(full: bool) -> None:
    main = sys.modules.get("__main__")
    print((getattr(main, "__doc__", None) or "python -m jaxsparse.train").strip())
    print("\nEvery config key with its value, default and a one-line doc:\n"
          "    python -m jaxsparse.train --config=configs/default.py --print_config\n"
          "Override any key with --config.<section>.<key>=VALUE, e.g. --config.train.steps=100.\n")
    print(flags.FLAGS.main_module_help() if full else "Flags (all of them: --helpfull):")
    if not full:
        module = getattr(main, "__spec__", None)
        name = module.name if module else "__main__"
        for flag in flags.FLAGS.get_key_flags_for_module(sys.argv[0]) or \
                flags.FLAGS.get_key_flags_for_module(name):
            print(f"  --{flag.name}: {flag.help}")


def _resolve_config_arg(argv: list[str]) -> tuple[list[str], str | None]:
    from jaxsparse.train.resolve.overrides import resolve_config_file, split_config
    out, config_file = [], None
    for arg in argv:
        if arg.startswith("--config="):
            path, args = split_config(arg.split("=", 1)[1])
            config_file = resolve_config_file(path)
            arg = f"--config={config_file}" + (f":{args}" if args is not None else "")
        out.append(arg)
    return out, config_file


def _plain(err: BaseException, config_file: str | None) -> str:
    """One line for an error raised while parsing flags or loading the config file."""
    where = f"config file {config_file}" if config_file else "command line"
    if isinstance(err, SyntaxError):
        return f"{where}: {user_code_error(err)}"
    text = str(err)
    if "Traceback (most recent call last)" in text:  # a config file's own exception, wrapped
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = re.sub(r"^[\w.]+(Error|Exception): ", "", last)
    elif isinstance(err, flags.Error):
        return f"bad command line: {text}"
    if isinstance(err, OSError) and "Failed loading config file" in text:
        text = text.strip().splitlines()[-1].strip()
    return f"{where}: {text}"


@entry_point(raise_exit=True)
def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing (the trainer's `flags_parser`); bad input takes the one exit path (one
    `error:` line, exit 2). Override keys are checked against `base_config()` before the file runs."""
    if any(a in HELP_FLAGS for a in argv[1:]):
        _print_help(full="--helpfull" in argv)
        return sys.exit(EXIT_OK)
    from jaxsparse.train.resolve.train_config import base_config
    config_file = None
    try:
        argv, config_file = _resolve_config_arg(argv)
        check_overrides(base_config(), argv)
        return flags.FLAGS(argv)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - executing a user's config file can raise anything
        raise ConfigError(_plain(err, config_file)) from None
