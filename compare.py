"""A/B-compare model configs on one training pipeline: ``python compare.py --help`` (the code: compare/)."""
import sys

from compare.cli import main

if __name__ == "__main__":
    sys.exit(main())
