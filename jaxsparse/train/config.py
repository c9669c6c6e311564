"""Deprecated module path: use `jaxsparse.train` (`base_config`, `parse_config_args`,
`parse_budget`) or `jaxsparse.train.resolve.config`. Kept so that config files written for the old layout
still load; see docs/migrating.md."""
import warnings

from jaxsparse.train.resolve.config import *  # noqa: F401,F403

warnings.warn("jaxsparse.train.config moved to jaxsparse.train.resolve.config; config files import "
              "base_config, parse_config_args and parse_budget from jaxsparse.train",
              DeprecationWarning, stacklevel=2)
