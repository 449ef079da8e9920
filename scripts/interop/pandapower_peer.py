#!/usr/bin/env python3
"""pandapower as a reference peer for gridmesh's grid crate.

  pandapower_peer.py solve CASE.m...              AC power flow (Newton-Raphson) on each case
  pandapower_peer.py bench REPEAT CASE.m...       time pandapower's runpp on each case

Cases are MATPOWER version 2 files, read here into a PYPOWER case dict and converted with
pandapower's own `from_ppc`. Both modes run `runpp(algorithm="nr", tolerance_mva=1e-8,
init="flat", numba=True, trafo_model="pi")`: the same method, tolerance and branch model as gridmesh.

`solve` prints {"CASE": {"converged": bool, "iterations": int, "vm_pu": {bus: float},
"va_degree": {bus: float}, "losses_kw": float}}. `bench` prints {"CASE": {"median_seconds":
float, "runs": int, "lightsim2grid_seconds": float}} after one warm-up run per case (numba's
compilation is not counted). pandapower runs without lightsim2grid (which it would otherwise
take when installed); lightsim2grid is timed on its own: its `GridModel` built from the same
pandapower network (transformers in the T model, which lightsim2grid requires), KLU, `ac_pf` from a flat start to 1e-8 after a first call (its symbolic
analysis kept, as it keeps it between calls), the median of `repeat`.
"""
import json
import re
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import pandapower as pp  # noqa: E402
from pandapower.converter import from_ppc  # noqa: E402


def read_case(path):
    """A MATPOWER v2 case file as a PYPOWER dict (numeric matrices only)."""
    text = open(path).read()
    text = re.sub(r"%[^\n]*", "", text)
    ppc = {"version": "2"}
    m = re.search(r"mpc\.baseMVA\s*=\s*([0-9.eE+-]+)", text)
    ppc["baseMVA"] = float(m.group(1))
    for name in ("bus", "gen", "branch"):
        m = re.search(r"mpc\." + name + r"\s*=\s*\[(.*?)\];", text, re.S)
        rows = [r for r in re.split(r"[;\n]", m.group(1)) if r.strip()]
        ppc[name] = np.array([[float(x) for x in r.split()] for r in rows])
    return ppc


def network(path):
    net = from_ppc(read_case(path), f_hz=50, validate_conversion=False)
    return net


def run(net):
    # trafo_model="pi" is MATPOWER's branch model (pandapower's default T model is another
    # equivalent circuit and differs by up to 3e-4 pu on case300).
    pp.runpp(net, algorithm="nr", tolerance_mva=1e-8, init="flat", numba=True,
             calculate_voltage_angles=True, max_iteration=20, trafo_model="pi",
             lightsim2grid=False)


def lightsim2grid_seconds(path, repeat):
    import numpy as np
    from lightsim2grid.gridmodel import init_from_pandapower
    from lightsim2grid.solver import SolverType

    # lightsim2grid takes transformers in pandapower's T model only: the same network with it
    # (the Jacobian has the same pattern and work; the answer differs by the model, ~1e-4 pu).
    net = network(path)
    pp.runpp(net, algorithm="nr", init="flat", numba=True, lightsim2grid=False)
    model = init_from_pandapower(net)
    model.change_solver(SolverType.KLU)
    nb = model.total_bus()
    model.ac_pf(np.ones(nb, dtype=complex), 20, 1e-8)
    times = []
    for _ in range(repeat):
        v0 = np.ones(nb, dtype=complex)
        started = time.perf_counter()
        v = model.ac_pf(v0, 20, 1e-8)
        times.append(time.perf_counter() - started)
        if len(v) == 0:
            raise SystemExit("lightsim2grid did not converge")
    return statistics.median(times)


def losses_kw(net):
    total = net.res_line.pl_mw.sum()
    if len(net.trafo):
        total += net.res_trafo.pl_mw.sum()
    return float(total) * 1000.0


def solve(paths):
    out = {}
    for path in paths:
        net = network(path)
        try:
            run(net)
            converged = True
        except pp.LoadflowNotConverged:
            converged = False
        res = {"converged": converged}
        if converged:
            res["iterations"] = int(net._ppc["iterations"])
            res["vm_pu"] = {str(int(b)): float(v) for b, v in net.res_bus.vm_pu.items()}
            res["va_degree"] = {str(int(b)): float(v) for b, v in net.res_bus.va_degree.items()}
            res["losses_kw"] = losses_kw(net)
        out[path] = res
    print(json.dumps(out))


def bench(repeat, paths):
    out = {}
    for path in paths:
        net = network(path)
        run(net)  # warm-up: numba compiles here
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            run(net)
            times.append(time.perf_counter() - started)
        out[path] = {
            "median_seconds": statistics.median(times),
            "runs": repeat,
            "lightsim2grid_seconds": lightsim2grid_seconds(path, repeat),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "solve":
        solve(sys.argv[2:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "bench":
        bench(int(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)
