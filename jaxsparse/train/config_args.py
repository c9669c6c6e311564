"""Deprecated module path: use `jaxsparse.train` (`base_config`, `parse_config_args`,
`parse_budget`) or `jaxsparse.train.resolve.overrides`. Kept so that config files written for the old layout
still load; see docs/migrating.md."""
import warnings

from jaxsparse.train.resolve.overrides import *  # noqa: F401,F403

warnings.warn("jaxsparse.train.config_args moved to jaxsparse.train.resolve.overrides; config files import "
              "base_config, parse_config_args and parse_budget from jaxsparse.train",
              DeprecationWarning, stacklevel=2)
