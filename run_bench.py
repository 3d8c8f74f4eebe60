"""Entry point: ``python run_bench.py --help`` (same as the ``dsvbench`` console script)."""
import sys

from dsvbench.cli import main

if __name__ == "__main__":   # --backend dask spawns worker processes, which import this file again
    sys.exit(main())
