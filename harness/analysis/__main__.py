"""`python -m harness.analysis SWEEP [SWEEP ...] [--name NAME] [--out DIR] [--params trainable|stored|nonzero]`

SWEEP is a sweep directory or a sweep name (sweeps/NAME). Writes DIR (default results/NAME) and
prints the table."""

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m harness.analysis` (tests/test_docs.py parses documented commands with it)."""
    parser = argparse.ArgumentParser(prog="python -m harness.analysis", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", help="sweep directories or names under sweeps/")
    parser.add_argument("--name", help="results name (default: the first sweep's directory name)")
    parser.add_argument("--out", help="output directory (default: results/<name>)")
    parser.add_argument("--no-records", action="store_true", help="do not copy the run records into <out>/runs/")
    parser.add_argument("--params", choices=("trainable", "stored", "nonzero"), default="trainable",
                        help="Pareto x axis: adapter params trainable at init (default), stored in the saved"
                             " artifact, or non-zero after training")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from harness.analysis import build, resolve_sweep, write
    try:
        dirs = [resolve_sweep(s) for s in args.sweeps]
        report = build(dirs, args.name, args.params)
    except (FileNotFoundError, ValueError) as e:
        print(f"harness.analysis: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("results") / report.name)
    written = write(report, out, with_records=not args.no_records)
    print(report.markdown)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
