"""Entry point: python -m jaxsparse.scaling {fit,predict,compare,plan} ..."""
import sys

from jaxsparse.scaling.cli import main

sys.exit(main())
