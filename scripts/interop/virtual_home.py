"""A virtual home of SunSpec devices on Modbus TCP, served by pymodbus with register maps laid out
from pysunspec2's model definitions (not from gridmesh's code), with physics:

- a PV inverter (models 1, 103, 123) whose power follows the reference weather (the DWD test
  reference year's beam and diffuse irradiance, transposed onto a 30° south-facing array by
  pvlib at the sun's position of the moment), under the power limit written to model 123;
- a battery (models 1, 124, 802 and a meter 203 on its connection, import = charging) whose
  state of charge integrates its power: by default it covers the home (self-consumption); a
  rate window written to model 124 (StorCtl_Mod, InWRte, OutWRte, percent of WChaMax, a
  negative rate forcing the other direction) bounds it, and reverts after InOutWRte_RvrtTms;
- the connection's meter (models 1, 203, positive W importing) computed from the home's balance:
  load (the BDEW H25 profile scaled to the household, with its own daily variation) minus PV
  minus battery.

The home's clock is the chain's: read from the node's `/v1/market` every second and run at
`--time-scale` in between (on while the node is away). Alongside it runs the same home without
any control (its battery on self-consumption all the time): the counterfactual a bill is compared
with. Every half second the state goes to `--state` (JSON): the devices now and each slot's
energies, for the real home and the counterfactual.

Usage: virtual_home.py --node URL --time-scale S --pv-port P --battery-port P --meter-port P
       --state FILE [--pv-kwp 6] [--battery-kwh 10] [--battery-kw 5] [--annual-kwh 4000]
Prints "ready" once it listens.
"""

import argparse
import asyncio
import calendar
import json
import math
import os
import sys
import time
import urllib.request

import numpy as np
import pvlib
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer

sys.path.insert(0, os.path.dirname(__file__))
from sunspec_server import Map  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "../../crates/agent/data")
LAT, LON = 52.38, 13.07
SLOT_MS = 900_000
EFF = math.sqrt(0.95)


def load_try():
    rows, started = [], False
    with open(os.path.join(DATA, "TRY2010_04_Jahr.dat"), encoding="latin-1") as f:
        for line in f:
            if not started:
                started = line.strip() == "***"
                continue
            p = line.split()
            if len(p) >= 16:
                rows.append((float(p[8]), max(0.0, float(p[13])), max(0.0, float(p[14]))))
    assert len(rows) == 8760, len(rows)
    return rows


def load_h25():
    values = [[[0.0] * 96 for _ in range(3)] for _ in range(12)]
    with open(os.path.join(DATA, "h25.csv"), encoding="utf-8") as f:
        lines = f.read().splitlines()[2:]
    for r, line in enumerate(lines[:96]):
        f = line.split(",")
        for k, v in enumerate(f[1:37]):
            values[k // 3][k % 3][r] = float(v)
    return values


class World:
    """Weather, load and the clock."""

    def __init__(self, a):
        self.a = a
        self.weather = load_try()
        self.h25 = load_h25()
        self.pv_cache = {}
        self.base_chain = None
        self.base_real = time.monotonic()

    def now_ms(self):
        return self.base_chain + (time.monotonic() - self.base_real) * 1000 * self.a.time_scale

    def sync(self):
        try:
            with urllib.request.urlopen(self.a.node + "/v1/market", timeout=2) as r:
                node = json.load(r)["now_ms"]
        except Exception:
            return False
        if self.base_chain is None or node > self.now_ms():
            self.base_chain, self.base_real = node, time.monotonic()
        return True

    def hour_row(self, ms):
        # TRY hours are CET and hour HH covers (HH-1, HH]: the UTC quarter hour's row.
        t = time.gmtime(ms / 1000)
        slot_of_year = (t.tm_yday - 1) * 96 + (t.tm_hour * 4 + t.tm_min // 15)
        return (slot_of_year // 4 + 1) % 8760

    def pv_kw(self, ms):
        """Available PV power in the middle of ms's quarter hour."""
        slot = int(ms // SLOT_MS)
        if slot not in self.pv_cache:
            mid = slot * SLOT_MS + SLOT_MS / 2
            temp, beam_h, diff_h = self.weather[self.hour_row(mid)]
            when = np.array([np.datetime64(int(mid), "ms")])
            import pandas as pd
            idx = pd.DatetimeIndex(when, tz="UTC")
            sp = pvlib.solarposition.get_solarposition(idx, LAT, LON, altitude=81)
            zen = float(sp["apparent_zenith"].iloc[0])
            azi = float(sp["azimuth"].iloc[0])
            if zen >= 89.0:
                poa = diff_h * (1 + math.cos(math.radians(30))) / 2 if zen < 96 else 0.0
            else:
                dni = min(beam_h / math.cos(math.radians(zen)), 1000.0)
                irr = pvlib.irradiance.get_total_irradiance(
                    30, 180, zen, azi, dni, beam_h + diff_h, diff_h, albedo=0.2)
                poa = float(irr["poa_global"])
            cell = temp + 0.03 * poa
            self.pv_cache[slot] = max(0.0, self.a.pv_kwp * poa / 1000 * (1 - 0.004 * (cell - 25)) * 0.86)
        return self.pv_cache[slot]

    def load_kw(self, ms):
        local = time.gmtime(ms / 1000 + 3600)  # CET
        kind = 1 if local.tm_wday == 6 else 0 if local.tm_wday == 5 else 2
        q = local.tm_hour * 4 + local.tm_min // 15
        base = self.h25[local.tm_mon - 1][kind][q] * self.a.annual_kwh / 1e6 * 4
        # The household's own variation: slow, seeded by the day.
        day = int(ms // 86_400_000)
        wobble = 1 + 0.25 * math.sin(2 * math.pi * (q / 96 + (day % 7) / 7))
        return base * wobble


class Battery:
    def __init__(self, a, soc_kwh):
        self.cap = a.battery_kwh
        self.p = a.battery_kw
        self.soc = soc_kwh
        self.charged_wh = 5000.0
        self.discharged_wh = 3000.0

    def step(self, wanted_kw, lo_kw, hi_kw, dt_h):
        """Power (positive discharging) within the window and the energy it holds."""
        kw = max(lo_kw, min(hi_kw, wanted_kw))
        kw = max(-self.p, min(self.p, kw))
        if kw > 0:
            kw = min(kw, self.soc * EFF / dt_h)
            self.soc -= kw * dt_h / EFF
            self.discharged_wh += kw * dt_h * 1000
        else:
            kw = max(kw, -(self.cap - self.soc) / EFF / dt_h)
            self.soc -= kw * dt_h * EFF
            self.charged_wh += -kw * dt_h * 1000
        self.soc = max(0.0, min(self.cap, self.soc))
        return kw


class Block(ModbusSequentialDataBlock):
    """Holding registers that remember when a client last wrote each one: a rewrite of the same
    value restarts a reversion timer, as on a real device."""

    def __init__(self, address, values):
        super().__init__(address, values)
        self.written = {}
        self.internal = False

    def setValues(self, address, values):
        if not self.internal:
            now = time.monotonic()
            for i in range(len(values)):
                self.written[address + i] = now
        super().setValues(address, values)


def server_map(models, base=40000):
    m = Map(base, models)
    m.set(1, "Mn", "gridmesh-virtual-home")
    return m


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True)
    ap.add_argument("--time-scale", type=float, required=True)
    ap.add_argument("--pv-port", type=int, required=True)
    ap.add_argument("--battery-port", type=int, required=True)
    ap.add_argument("--meter-port", type=int, required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--pv-kwp", type=float, default=6.0)
    ap.add_argument("--battery-kwh", type=float, default=10.0)
    ap.add_argument("--battery-kw", type=float, default=5.0)
    ap.add_argument("--annual-kwh", type=float, default=4000.0)
    a = ap.parse_args()

    world = World(a)
    while not world.sync():
        await asyncio.sleep(0.2)

    maps, blocks = {}, {}
    for name, models in [("pv", [1, 103, 123]), ("battery", [1, 124, 802, 203]), ("meter", [1, 203])]:
        maps[name] = server_map(models)
    maps["pv"].set(1, "Md", "pv-inverter")
    maps["pv"].set(1, "SN", "PV-0001")
    maps["pv"].set(103, "W_SF", 0)
    maps["pv"].set(103, "WH_SF", 0)
    maps["pv"].set(123, "WMaxLimPct_SF", -1 & 0xFFFF)
    maps["pv"].set(123, "WMaxLimPct", 1000)
    maps["battery"].set(1, "Md", "home-battery")
    maps["battery"].set(1, "SN", "BAT-0001")
    maps["battery"].set(124, "WChaMax", int(a.battery_kw * 1000))
    maps["battery"].set(124, "WChaMax_SF", 0)
    maps["battery"].set(124, "InOutWRte_SF", -1 & 0xFFFF)
    maps["battery"].set(124, "ChaState_SF", -1 & 0xFFFF)
    maps["battery"].set(802, "SoC_SF", -1 & 0xFFFF)
    maps["battery"].set(802, "WHRtg", int(a.battery_kwh * 1000))
    maps["battery"].set(203, "W_SF", 0)
    maps["battery"].set(203, "TotWh_SF", 0)
    maps["meter"].set(1, "Md", "grid-meter")
    maps["meter"].set(1, "SN", "MTR-0001")
    maps["meter"].set(203, "W_SF", 0)
    maps["meter"].set(203, "TotWh_SF", 0)
    for name, m in maps.items():
        blocks[name] = Block(40001, list(m.regs))

    def rd(dev, mid, point):
        v = blocks[dev].getValues(40001 + maps[dev].addr(mid, point), 1)[0]
        return v

    def rd_signed(dev, mid, point):
        v = rd(dev, mid, point)
        return v - 0x10000 if v >= 0x8000 else v

    def wr(dev, mid, point, v):
        blocks[dev].internal = True
        blocks[dev].setValues(40001 + maps[dev].addr(mid, point), [int(v) & 0xFFFF])
        blocks[dev].internal = False

    def wr32(dev, mid, point, v):
        v = int(v) & 0xFFFFFFFF
        blocks[dev].internal = True
        blocks[dev].setValues(40001 + maps[dev].addr(mid, point), [v >> 16, v & 0xFFFF])
        blocks[dev].internal = False

    def last_write(dev, mid, points):
        """When a client last wrote any of `points` (monotonic seconds; 0 never)."""
        w = blocks[dev].written
        return max(w.get(40001 + maps[dev].addr(mid, p), 0.0) for p in points)

    bat = Battery(a, a.battery_kwh / 2)
    shadow = Battery(a, a.battery_kwh / 2)
    pv_wh, imp_wh, exp_wh = 1000.0, 1000.0, 1000.0
    slots = {}
    state = {"reverted": {}}

    async def physics():
        nonlocal pv_wh, imp_wh, exp_wh
        last = world.now_ms()
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(0.05)
            if time.monotonic() - last_sync > 1.0:
                world.sync()
                last_sync = time.monotonic()
            now = world.now_ms()
            dt_h = max(0.0, now - last) / 3_600_000
            last = now
            real = time.monotonic()
            # Controls and their reversion (real seconds after the last write).
            lim = (rd("pv", 123, "WMaxLimPct"), rd("pv", 123, "WMaxLim_Ena"), rd("pv", 123, "WMaxLimPct_RvrtTms"))
            lim_at = last_write("pv", 123, ["WMaxLimPct", "WMaxLim_Ena", "WMaxLimPct_RvrtTms"])
            sto = (rd("battery", 124, "StorCtl_Mod"), rd("battery", 124, "InWRte"),
                   rd("battery", 124, "OutWRte"), rd("battery", 124, "InOutWRte_RvrtTms"))
            sto_at = last_write("battery", 124, ["StorCtl_Mod", "InWRte", "OutWRte", "InOutWRte_RvrtTms"])
            if lim[1] == 1 and lim[2] > 0 and real - lim_at > lim[2]:
                wr("pv", 123, "WMaxLim_Ena", 0)
                state["reverted"]["pv"] = now
            if sto[0] != 0 and sto[3] > 0 and real - sto_at > sto[3]:
                wr("battery", 124, "StorCtl_Mod", 0)
                state["reverted"]["battery"] = now
            # PV.
            avail = world.pv_kw(now)
            pv = avail
            if rd("pv", 123, "WMaxLim_Ena") == 1:
                pv = min(pv, a.pv_kwp * rd("pv", 123, "WMaxLimPct") / 1000)
            load = world.load_kw(now)
            # Battery: self-consumption by default, within the written window.
            mode = rd("battery", 124, "StorCtl_Mod")
            wmax = a.battery_kw
            lo, hi = -wmax, wmax
            if mode & 1:
                lo = -rd_signed("battery", 124, "InWRte") / 1000 * wmax
            if mode & 2:
                hi = rd_signed("battery", 124, "OutWRte") / 1000 * wmax
            b = bat.step(load - pv, lo, hi, dt_h)
            grid = load - pv - b
            # The counterfactual: the same home, no control, its battery on self-consumption.
            sb = shadow.step(load - avail, -wmax, wmax, dt_h)
            sgrid = load - avail - sb
            pv_wh += pv * dt_h * 1000
            if grid > 0:
                imp_wh += grid * dt_h * 1000
            else:
                exp_wh += -grid * dt_h * 1000
            slot = str(int((now - 1) // SLOT_MS))
            s = slots.setdefault(slot, {"battery_kwh": 0.0, "import_kwh": 0.0, "export_kwh": 0.0,
                                        "pv_kwh": 0.0, "load_kwh": 0.0, "controlled_h": 0.0,
                                        "plain_import_kwh": 0.0, "plain_export_kwh": 0.0,
                                        "hours": 0.0})
            s["battery_kwh"] += b * dt_h
            s["import_kwh"] += max(grid, 0) * dt_h
            s["export_kwh"] += max(-grid, 0) * dt_h
            s["pv_kwh"] += pv * dt_h
            s["load_kwh"] += load * dt_h
            s["controlled_h"] += dt_h if mode else 0.0
            s["plain_import_kwh"] += max(sgrid, 0) * dt_h
            s["plain_export_kwh"] += max(-sgrid, 0) * dt_h
            s["hours"] += dt_h
            s["soc_end_kwh"] = bat.soc
            s["plain_soc_end_kwh"] = shadow.soc
            # Registers.
            wr("pv", 103, "W", round(pv * 1000))
            wr32("pv", 103, "WH", pv_wh)
            wr("battery", 203, "W", round(-b * 1000))
            wr32("battery", 203, "TotWhImp", bat.charged_wh)
            wr32("battery", 203, "TotWhExp", bat.discharged_wh)
            wr("battery", 802, "SoC", round(bat.soc / a.battery_kwh * 1000))
            wr("battery", 124, "ChaState", round(bat.soc / a.battery_kwh * 1000))
            wr("meter", 203, "W", round(grid * 1000))
            wr32("meter", 203, "TotWhImp", imp_wh)
            wr32("meter", 203, "TotWhExp", exp_wh)
            state.update({"now_ms": now, "pv_kw": pv, "pv_available_kw": avail, "load_kw": load,
                          "battery_kw": b, "grid_kw": grid, "soc_kwh": bat.soc,
                          "storctl_mod": mode, "pv_limit_enabled": rd("pv", 123, "WMaxLim_Ena")})

    async def dump():
        while True:
            await asyncio.sleep(0.5)
            tmp = a.state + ".tmp"
            with open(tmp, "w") as f:
                json.dump(dict(state, slots=slots), f)
            os.replace(tmp, a.state)

    loop = asyncio.get_running_loop()
    loop.create_task(physics())
    loop.create_task(dump())
    servers = []
    for name, port in [("pv", a.pv_port), ("battery", a.battery_port), ("meter", a.meter_port)]:
        ctx = ModbusServerContext(slaves=ModbusSlaveContext(hr=blocks[name]), single=True)
        servers.append(StartAsyncTcpServer(context=ctx, address=("127.0.0.1", port)))
    loop.call_later(0.5, lambda: print("ready", flush=True))
    await asyncio.gather(*servers)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
