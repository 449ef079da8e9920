"""Solves MPS files with HiGHS (highspy) and prints each optimal objective as JSON.

Usage: highs_peer.py FILE.mps [FILE.mps ...]
"""

import json
import sys

import highspy

out = []
for path in sys.argv[1:]:
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 1e-9)
    if h.readModel(path) != highspy.HighsStatus.kOk:
        raise SystemExit(f"HiGHS could not read {path}")
    h.run()
    out.append({
        "file": path,
        "status": h.modelStatusToString(h.getModelStatus()),
        "objective": h.getInfo().objective_function_value,
    })
print(json.dumps(out))
