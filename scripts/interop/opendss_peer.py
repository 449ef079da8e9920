#!/usr/bin/env python3
"""OpenDSS (DSS C-API through opendssdirect.py) as a reference peer for gridmesh's unbalanced
power flow.

  opendss_peer.py solve MASTER.dss...           compile each master, solve at 1e-10
  opendss_peer.py day MASTER.dss STEPS REPEAT   time a yearly-mode run of STEPS one-minute steps
  opendss_peer.py time REPEAT MASTER.dss...     time a cold snapshot solve of each master

`solve` prints {"MASTER": {"converged": bool, "buses": {bus: {node: [vm_pu, va_deg]}},
"kv_base_ln": {bus: kV}, "losses_kw": float, "total_power_kw": float, "capacitor_steps":
{capacitor: steps in service}, "ders": {pvsystem or storage: [kW, kvar] drawn}}}: puVmagAngle per bus,
as the references in ../shared/data/dss were made. `day` prints {"median_seconds": float,
"runs": int, "steps": int} after one warm-up run (each run compiles the master again; only the
solve of the steps is timed). `time` prints {"MASTER": {"median_seconds": float, "runs": int}}:
each run sets snapshot mode again (which makes OpenDSS start over from its direct solution) and
times the `solve`.
"""
import json
import statistics
import sys
import time

import opendssdirect as dss


def compile_master(path):
    dss.Text.Command("clear")
    dss.Text.Command(f'compile "{path}"')
    dss.Text.Command("set tolerance=1e-10")
    dss.Text.Command("set maxiterations=100")


def solve(path):
    compile_master(path)
    dss.Text.Command("solve")
    buses, bases = {}, {}
    for name in dss.Circuit.AllBusNames():
        dss.Circuit.SetActiveBus(name)
        nodes = dss.Bus.Nodes()
        pu = dss.Bus.puVmagAngle()
        buses[name] = {str(n): [pu[2 * i], pu[2 * i + 1]] for i, n in enumerate(nodes)}
        bases[name] = dss.Bus.kVBase()
    losses = dss.Circuit.Losses()
    total = dss.Circuit.TotalPower()
    capacitors = {}
    for name in dss.Capacitors.AllNames():
        if name == "none":
            continue
        dss.Capacitors.Name(name)
        capacitors[name] = sum(1 for s in dss.Capacitors.States() if s)
    # What PV systems and storage draw at their terminals, kW and kvar (negative: deliver).
    ders = {}
    for cls in ("PVSystem", "Storage"):
        for name in dss.Circuit.AllElementNames():
            if name.lower().startswith(cls.lower() + "."):
                dss.Circuit.SetActiveElement(name)
                s = dss.CktElement.Powers()
                ders[name.split(".", 1)[1].lower()] = [sum(s[0::2]), sum(s[1::2])]
    return {
        "converged": bool(dss.Solution.Converged()),
        "capacitor_steps": capacitors,
        "ders": ders,
        "buses": buses,
        "kv_base_ln": bases,
        "losses_kw": losses[0] / 1000.0,
        "total_power_kw": -total[0],
    }


def day(path, steps, repeat):
    times = []
    for run in range(repeat + 1):
        compile_master(path)
        dss.Text.Command(f"set mode=yearly number={steps} stepsize=1m")
        t0 = time.perf_counter()
        dss.Text.Command("solve")
        elapsed = time.perf_counter() - t0
        if run > 0:
            times.append(elapsed)
    return {"median_seconds": statistics.median(times), "runs": repeat, "steps": steps}


def time_snapshot(path, repeat):
    compile_master(path)
    times = []
    for run in range(repeat + 1):
        dss.Text.Command("set mode=snapshot")
        t0 = time.perf_counter()
        dss.Text.Command("solve")
        elapsed = time.perf_counter() - t0
        if run > 0:
            times.append(elapsed)
    return {"median_seconds": statistics.median(times), "runs": repeat}


def main(argv):
    if len(argv) >= 2 and argv[0] == "solve":
        print(json.dumps({p: solve(p) for p in argv[1:]}))
    elif len(argv) >= 3 and argv[0] == "time":
        print(json.dumps({p: time_snapshot(p, int(argv[1])) for p in argv[2:]}))
    elif len(argv) == 4 and argv[0] == "day":
        print(json.dumps(day(argv[1], int(argv[2]), int(argv[3]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
