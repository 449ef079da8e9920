"""A SunSpec device on Modbus TCP, served by pymodbus, its register map laid out from pysunspec2's
model definitions (the SunSpec Alliance's JSON models), not from our code.

The device is a hybrid inverter with a battery: common model 1, inverter model 103, immediate
controls 123, storage 124, battery 802 and a meter 203 on the battery's connection. Every second it
produces `--w` watts of PV (the inverter's WH accumulates), and the battery charges at `--charge-w`
(the meter's TotWhImp accumulates). Controls behave as the standard says: a power limit written to
model 123 (WMaxLimPct with WMaxLim_Ena = 1) holds for WMaxLimPct_RvrtTms seconds after the last
write, then reverts (WMaxLim_Ena back to 0); the storage rates of model 124 (StorCtl_Mod) revert after
InOutWRte_RvrtTms the same way. So a controller that dies leaves the device in its safe default.

Usage: sunspec_server.py --port P [--base 40000] [--w 3000] [--charge-w 1000] [--wh 123456]
Prints "ready" once it listens.
"""

import argparse
import asyncio
import json
import os
import sys
import time

import sunspec2
from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartAsyncTcpServer

MODELS_DIR = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")


def model_points(mid):
    with open(os.path.join(MODELS_DIR, f"model_{mid}.json")) as f:
        group = json.load(f)["group"]
    offsets, off = {}, 0
    for p in group["points"]:
        offsets[p["name"]] = (off, p["type"], p["size"])
        off += p["size"]
    return offsets, off  # off includes ID and L


class Map:
    """A SunSpec register map: 'SunS', models in order, the end marker."""

    def __init__(self, base, models):
        self.base = base
        self.regs = [0x5375, 0x6E53]  # "SunS"
        self.models = {}
        for mid in models:
            pts, size = model_points(mid)
            start = len(self.regs)
            self.regs += [0] * size
            self.regs[start] = mid
            self.regs[start + 1] = size - 2
            self.models[mid] = (start, pts)
        self.regs += [0xFFFF, 0]

    def addr(self, mid, point):
        start, pts = self.models[mid]
        return start + pts[point][0]

    def set(self, mid, point, value):
        start, pts = self.models[mid]
        off, typ, size = pts[point]
        i = start + off
        if typ == "string":
            b = value.encode().ljust(size * 2, b"\0")[: size * 2]
            for k in range(size):
                self.regs[i + k] = (b[2 * k] << 8) | b[2 * k + 1]
        elif size == 2:
            v = value & 0xFFFFFFFF
            self.regs[i], self.regs[i + 1] = v >> 16, v & 0xFFFF
        else:
            self.regs[i] = value & 0xFFFF

    def get(self, mid, point):
        start, pts = self.models[mid]
        off, typ, size = pts[point]
        i = start + off
        if size == 2:
            return (self.regs[i] << 16) | self.regs[i + 1]
        v = self.regs[i]
        if typ in ("int16", "sunssf") and v >= 0x8000:
            v -= 0x10000
        return v


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--base", type=int, default=40000)
    ap.add_argument("--w", type=int, default=3000)
    ap.add_argument("--charge-w", type=int, default=1000)
    ap.add_argument("--wh", type=int, default=123456)
    a = ap.parse_args()

    m = Map(a.base, [1, 103, 123, 124, 802, 203])
    m.set(1, "Mn", "gridmesh-interop")
    m.set(1, "Md", "hybrid-5k")
    m.set(1, "SN", "SN-0001")
    # Inverter: W in watts (SF 0), WH in 10 Wh units (SF 1) to exercise scale factors.
    m.set(103, "W_SF", 0)
    m.set(103, "WH_SF", 1)
    m.set(103, "W", a.w)
    wh = a.wh * 1.0
    m.set(103, "WH", int(wh) // 10)
    m.set(103, "St", 4)  # MPPT
    # Controls: percent with one decimal (SF -1).
    m.set(123, "WMaxLimPct_SF", -1 & 0xFFFF)
    m.set(123, "WMaxLimPct", 1000)
    m.set(124, "WChaMax", 5000)
    m.set(124, "InOutWRte_SF", -1 & 0xFFFF)
    m.set(124, "ChaState_SF", -1 & 0xFFFF)
    # Battery: SoC in 0.1 % (SF -1).
    m.set(802, "SoC_SF", -1 & 0xFFFF)
    soc = 500.0
    m.set(802, "SoC", int(soc))
    m.set(802, "WHRtg", 10000)
    # Meter on the battery: Wh (SF 0); import = charging.
    m.set(203, "W_SF", 0)
    m.set(203, "TotWh_SF", 0)
    imp = 5000.0
    m.set(203, "TotWhImp", int(imp))
    m.set(203, "W", a.charge_w)

    # pymodbus's slave context adds 1 to every request address (Modbus "register 1" is address
    # 0): the block starts one higher so that a read at `base` returns "SunS".
    first = a.base + 1
    block = ModbusSequentialDataBlock(first, list(m.regs))
    device = ModbusSlaveContext(hr=block)
    context = ModbusServerContext(slaves=device, single=True)

    def read(mid, point):
        return block.getValues(first + m.addr(mid, point), 1)[0]

    def write(mid, point, v):
        block.setValues(first + m.addr(mid, point), [v & 0xFFFF])

    async def physics():
        nonlocal wh, imp, soc
        last_lim = (read(123, "WMaxLimPct"), read(123, "WMaxLim_Ena"), read(123, "WMaxLimPct_RvrtTms"))
        last_sto = (read(124, "StorCtl_Mod"), read(124, "InWRte"), read(124, "OutWRte"),
                    read(124, "InOutWRte_RvrtTms"))
        lim_written = sto_written = time.monotonic()
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            # A write (any change of the control registers) restarts the reversion timer.
            lim = (read(123, "WMaxLimPct"), read(123, "WMaxLim_Ena"), read(123, "WMaxLimPct_RvrtTms"))
            if lim != last_lim:
                lim_written, last_lim = now, lim
            sto = (read(124, "StorCtl_Mod"), read(124, "InWRte"), read(124, "OutWRte"),
                   read(124, "InOutWRte_RvrtTms"))
            if sto != last_sto:
                sto_written, last_sto = now, sto
            if lim[1] == 1 and lim[2] > 0 and now - lim_written > lim[2]:
                write(123, "WMaxLim_Ena", 0)
            if sto[0] != 0 and sto[3] > 0 and now - sto_written > sto[3]:
                write(124, "StorCtl_Mod", 0)
            # PV under the limit, if enabled.
            w = a.w
            if read(123, "WMaxLim_Ena") == 1:
                w = min(w, int(5000 * read(123, "WMaxLimPct") / 1000))
            wh += w * 0.1 / 3600
            write(103, "W", w)
            v = int(wh) // 10
            block.setValues(first + m.addr(103, "WH"), [v >> 16, v & 0xFFFF])
            imp += a.charge_w * 0.1 / 3600
            v = int(imp)
            block.setValues(first + m.addr(203, "TotWhImp"), [v >> 16, v & 0xFFFF])
            soc = min(1000.0, soc + a.charge_w * 0.1 / 3600 / 10000 * 1000)
            write(802, "SoC", int(soc))

    asyncio.get_running_loop().create_task(physics())
    print("ready", flush=True)
    await StartAsyncTcpServer(context=context, address=("127.0.0.1", a.port))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
