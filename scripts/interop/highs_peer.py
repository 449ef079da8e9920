"""Solves MPS files with HiGHS (highspy) and prints each optimal objective as JSON.

Usage: highs_peer.py [--time] FILE.mps [FILE.mps ...]

With --time, each file is also solved three more times from a fresh read, and the fastest
`run()` is reported in seconds (`run_s`): HiGHS's own solve, without reading the file.
"""

import json
import os
import sys
import time

# HiGHS prints its banner from C++ on the process's stdout before any option applies: stdout
# goes to /dev/null until the JSON is printed, which is then all there is.
sys.stdout.flush()
_stdout = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)

import highspy  # noqa: E402

args = sys.argv[1:]
timed = bool(args) and args[0] == "--time"
if timed:
    args = args[1:]


def solve(path):
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-9)
    if h.readModel(path) != highspy.HighsStatus.kOk:
        raise SystemExit(f"HiGHS could not read {path}")
    t = time.perf_counter()
    h.run()
    return h, time.perf_counter() - t


out = []
for path in args:
    h, _ = solve(path)
    row = {
        "file": path,
        "status": h.modelStatusToString(h.getModelStatus()),
        "objective": h.getInfo().objective_function_value,
    }
    if timed:
        row["run_s"] = min(solve(path)[1] for _ in range(3))
    out.append(row)
sys.stdout.flush()
os.dup2(_stdout, 1)
print(json.dumps(out))
