#!/usr/bin/env python3
"""power-grid-model (PyPI) as the peer for gridmesh's unbalanced power flow benchmark.

  pgm_peer.py time REPEAT MASTER.dss...   asymmetric Newton-Raphson on each feeder, timed
  pgm_peer.py radial REPEAT CASE.m...      symmetric iterative current on MATPOWER radial feeders

Each OpenDSS master is compiled by OpenDSS (opendssdirect.py) and rebuilt here as a
power-grid-model network: a node per bus, the source as `source` (its short-circuit power and
X/R), lines from their sequence impedances (`line`), two-winding three-phase transformers
(`transformer`, clock from the connection), single- and three-phase loads as `asym_load`
(constant impedance where OpenDSS's model 2 or a load beyond its Vmaxpu, constant power
otherwise). Supported: what the European LV test feeder uses; anything else is an error.

Prints {"MASTER": {"median_seconds": float, "runs": int, "iterations_limit": 20,
"buses": int, "u_pu": {bus: [ua, ub, uc]}}} after one warm-up run; the time is
`calculate_power_flow(symmetric=False, newton_raphson, error_tolerance=1e-8)` on a model already
built.

`radial` rebuilds a MATPOWER (version 2) radial feeder without transformers as a symmetric
power-grid-model network (lines in ohms from the per-unit branches, loads of constant power, the
slack as a stiff source at its set voltage) and prints {"CASE": {"median_seconds": float, "runs":
int, "vm_pu": {bus: float}}}: `calculate_power_flow(symmetric=True, iterative_current,
error_tolerance=1e-8)`, its counterpart of our backward/forward sweep.
"""
import json
import math
import statistics
import sys
import time

import numpy as np
import opendssdirect as dss
from power_grid_model import (
    CalculationMethod,
    ComponentType,
    DatasetType,
    LoadGenType,
    PowerGridModel,
    WindingType,
    initialize_array,
)


def build(path):
    dss.Text.Command("clear")
    dss.Text.Command(f'compile "{path}"')
    buses = [b.lower() for b in dss.Circuit.AllBusNames()]
    bus_id = {b: i for i, b in enumerate(buses)}
    u_rated = {}
    for b in buses:
        dss.Circuit.SetActiveBus(b)
        u_rated[b] = dss.Bus.kVBase() * math.sqrt(3) * 1000.0
    next_id = len(buses)

    def ids(n):
        nonlocal next_id
        out = np.arange(next_id, next_id + n)
        next_id += n
        return out

    node = initialize_array(DatasetType.input, ComponentType.node, len(buses))
    node["id"] = np.arange(len(buses))
    node["u_rated"] = [u_rated[b] for b in buses]

    dss.Vsources.First()
    src_bus = dss.CktElement.BusNames()[0].split(".")[0].lower()
    kv = dss.Vsources.BasekV()
    def ask(prop):
        dss.Text.Command(f"? vsource.source.{prop}")
        return float(dss.Text.Result())

    sk = math.sqrt(3) * kv * ask("isc3") * 1000.0
    x1r1 = ask("x1r1")
    source = initialize_array(DatasetType.input, ComponentType.source, 1)
    source["id"] = ids(1)
    source["node"] = bus_id[src_bus]
    source["status"] = 1
    source["u_ref"] = dss.Vsources.PU()
    source["u_ref_angle"] = math.radians(dss.Vsources.AngleDeg())
    source["sk"] = sk
    source["rx_ratio"] = 1.0 / x1r1

    names = dss.Lines.AllNames()
    line = initialize_array(DatasetType.input, ComponentType.line, len(names))
    line["id"] = ids(len(names))
    for k, name in enumerate(names):
        dss.Lines.Name(name)
        if dss.Lines.Phases() != 3:
            raise SystemExit(f"line {name}: only three-phase lines are rebuilt")
        z = np.array(dss.Lines.RMatrix()) + 1j * np.array(dss.Lines.XMatrix())
        length = dss.Lines.Length()
        # Sequence impedances of the (transposed) line in ohms: Zs on the diagonal, Zm off it.
        zs, zm = z[0] * length, z[1] * length
        z1, z0 = zs - zm, zs + 2 * zm
        # RMatrix is per the line's length unit, as Length is.
        line[k]["from_node"] = bus_id[dss.Lines.Bus1().split(".")[0].lower()]
        line[k]["to_node"] = bus_id[dss.Lines.Bus2().split(".")[0].lower()]
        line[k]["from_status"] = 1
        line[k]["to_status"] = 1
        line[k]["r1"], line[k]["x1"] = z1.real, z1.imag
        line[k]["r0"], line[k]["x0"] = z0.real, z0.imag
        line[k]["c1"] = line[k]["c0"] = 0.0
        line[k]["tan1"] = line[k]["tan0"] = 0.0
        line[k]["i_n"] = dss.Lines.NormAmps()

    names = dss.Transformers.AllNames()
    tr = initialize_array(DatasetType.input, ComponentType.transformer, len(names))
    tr["id"] = ids(len(names))
    for k, name in enumerate(names):
        dss.Transformers.Name(name)
        if dss.Transformers.NumWindings() != 2:
            raise SystemExit(f"transformer {name}: only two windings are rebuilt")
        wind = []
        for w in (1, 2):
            dss.Transformers.Wdg(w)
            wind.append((dss.Transformers.kV(), dss.Transformers.kVA(), dss.Transformers.R(), dss.Transformers.IsDelta()))
        b = [x.split(".")[0].lower() for x in dss.CktElement.BusNames()]
        tr[k]["from_node"], tr[k]["to_node"] = bus_id[b[0]], bus_id[b[1]]
        tr[k]["from_status"] = tr[k]["to_status"] = 1
        tr[k]["u1"], tr[k]["u2"] = wind[0][0] * 1000.0, wind[1][0] * 1000.0
        tr[k]["sn"] = wind[0][1] * 1000.0
        r_pu = (wind[0][2] + wind[1][2]) / 100.0
        x_pu = dss.Transformers.Xhl() / 100.0
        tr[k]["uk"] = math.hypot(r_pu, x_pu)
        tr[k]["pk"] = r_pu * wind[0][1] * 1000.0
        tr[k]["i0"] = tr[k]["p0"] = 0.0
        tr[k]["winding_from"] = WindingType.delta if wind[0][3] else WindingType.wye_n
        tr[k]["winding_to"] = WindingType.delta if wind[1][3] else WindingType.wye_n
        # OpenDSS's ANSI delta-wye: the low side lags by 30 degrees.
        tr[k]["clock"] = 1 if wind[0][3] != wind[1][3] else 0
        tr[k]["tap_side"] = 0
        tr[k]["tap_pos"] = tr[k]["tap_min"] = tr[k]["tap_max"] = tr[k]["tap_nom"] = 0
        tr[k]["tap_size"] = 0.0

    names = dss.Loads.AllNames()
    load = initialize_array(DatasetType.input, ComponentType.asym_load, len(names))
    load["id"] = ids(len(names))
    for k, name in enumerate(names):
        dss.Loads.Name(name)
        spec = dss.CktElement.BusNames()[0].split(".")
        bus, nodes = spec[0].lower(), [int(x) for x in spec[1:] if x != "0"] or [1, 2, 3]
        p = np.zeros(3)
        q = np.zeros(3)
        for n in nodes:
            p[n - 1] = dss.Loads.kW() * 1000.0 / len(nodes)
            q[n - 1] = dss.Loads.kvar() * 1000.0 / len(nodes)
        load[k]["node"] = bus_id[bus]
        load[k]["status"] = 1
        # OpenDSS holds a load beyond Vmaxpu (these homes at 1.09 pu of 230 V) as an impedance.
        load[k]["type"] = LoadGenType.const_impedance
        load[k]["p_specified"] = p
        load[k]["q_specified"] = q

    data = {
        ComponentType.node: node,
        ComponentType.source: source,
        ComponentType.line: line,
        ComponentType.transformer: tr,
        ComponentType.asym_load: load,
    }
    return PowerGridModel(data), buses


def run(model):
    return model.calculate_power_flow(
        symmetric=False,
        error_tolerance=1e-8,
        max_iterations=20,
        calculation_method=CalculationMethod.newton_raphson,
    )


def time_model(path, repeat):
    model, buses = build(path)
    times = []
    for k in range(repeat + 1):
        t0 = time.perf_counter()
        out = run(model)
        elapsed = time.perf_counter() - t0
        if k > 0:
            times.append(elapsed)
    u = out[ComponentType.node]["u_pu"]
    return {
        "median_seconds": statistics.median(times),
        "runs": repeat,
        "buses": len(buses),
        "u_pu": {b: [float(x) for x in u[i]] for i, b in enumerate(buses)},
    }


def radial(path, repeat):
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from pandapower_peer import read_case

    ppc = read_case(path)
    base_mva = float(ppc["baseMVA"])
    bus, branch, gen = ppc["bus"], ppc["branch"], ppc["gen"]
    ids = {int(b[0]): i for i, b in enumerate(bus)}
    node = initialize_array(DatasetType.input, ComponentType.node, len(bus))
    node["id"] = np.arange(len(bus))
    kv = np.where(bus[:, 9] > 0, bus[:, 9], 1.0)
    node["u_rated"] = kv * 1000.0
    line = initialize_array(DatasetType.input, ComponentType.line, len(branch))
    line["id"] = np.arange(len(bus), len(bus) + len(branch))
    for k, br in enumerate(branch):
        if br[8] not in (0.0, 1.0) or br[9] != 0.0:
            raise SystemExit(f"{path}: branch {k} is a transformer")
        f = ids[int(br[0])]
        z_base = kv[f] ** 2 / base_mva
        line[k]["from_node"], line[k]["to_node"] = f, ids[int(br[1])]
        line[k]["from_status"] = line[k]["to_status"] = int(br[10])
        line[k]["r1"], line[k]["x1"] = br[2] * z_base, br[3] * z_base
        line[k]["c1"] = br[4] / z_base / (2 * math.pi * 50.0)
        line[k]["tan1"] = 0.0
        line[k]["i_n"] = 1e9
    first = len(bus) + len(branch)
    load = initialize_array(DatasetType.input, ComponentType.sym_load, len(bus))
    load["id"] = np.arange(first, first + len(bus))
    load["node"] = np.arange(len(bus))
    load["status"] = 1
    load["type"] = LoadGenType.const_power
    load["p_specified"] = bus[:, 2] * 1e6
    load["q_specified"] = bus[:, 3] * 1e6
    slack = [i for i, b in enumerate(bus) if int(b[1]) == 3]
    source = initialize_array(DatasetType.input, ComponentType.source, len(slack))
    source["id"] = np.arange(first + len(bus), first + len(bus) + len(slack))
    source["node"] = slack
    source["status"] = 1
    for k, i in enumerate(slack):
        g = [row for row in gen if ids[int(row[0])] == i]
        source[k]["u_ref"] = g[0][5] if g else bus[i, 7]
    source["sk"] = 1e20
    model = PowerGridModel({
        ComponentType.node: node,
        ComponentType.line: line,
        ComponentType.sym_load: load,
        ComponentType.source: source,
    })

    def once():
        return model.calculate_power_flow(
            symmetric=True,
            error_tolerance=1e-8,
            max_iterations=50,
            calculation_method=CalculationMethod.iterative_current,
        )

    once()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t0)
    vm = out[ComponentType.node]["u_pu"]
    return {
        "median_seconds": statistics.median(times),
        "runs": repeat,
        "vm_pu": {str(int(bus[i, 0])): float(vm[i]) for i in range(len(bus))},
    }


def main(argv):
    if len(argv) >= 3 and argv[0] == "time":
        print(json.dumps({p: time_model(p, int(argv[1])) for p in argv[2:]}))
    elif len(argv) >= 3 and argv[0] == "radial":
        print(json.dumps({p: radial(p, int(argv[1])) for p in argv[2:]}))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
