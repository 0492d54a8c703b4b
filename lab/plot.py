#!/usr/bin/python3
"""Redraws the plots and report.md of an `agile-lab experiment` results folder.

  /usr/bin/python3 lab/plot.py RESULTS_DIR

(The experiment does this itself at its end; this is for a folder whose
summary.json or notes.md changed since.) Needs matplotlib.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from agilelab.plots import plot_all  # noqa: E402
from agilelab.report import write_report  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    plot_all(sys.argv[1])
    with open(os.path.join(sys.argv[1], "summary.json")) as f:
        write_report(sys.argv[1], json.load(f))
