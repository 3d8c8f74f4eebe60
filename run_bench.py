"""Entry point: ``python run_bench.py --help`` (same as the ``dsvbench`` console script)."""
import sys

from dsvbench.cli import main

sys.exit(main())
