"""A virtual home of SunSpec devices on Modbus TCP, served by pymodbus with register maps laid out
from pysunspec2's model definitions (not from gridmesh's code), with physics:

- a PV inverter (models 1, 103, 123) whose power follows the reference weather (the DWD test
  reference year's beam and diffuse irradiance, transposed onto a 30° south-facing array by
  pvlib at the sun's position of the moment), under the power limit written to model 123;
- a battery (models 1, 124, 802 and a meter 203 on its connection, import = charging) whose
  state of charge integrates its power: by default it covers the home (self-consumption); a
  rate window written to model 124 (StorCtl_Mod, InWRte, OutWRte, percent of WChaMax, a
  negative rate forcing the other direction) bounds it, and reverts after InOutWRte_RvrtTms;
- an EV charger (with `--ev-url`), an OCPP 1.6J charge point built with the `ocpp` package
  (mobilityhouse) that connects to the home's central system: an EV arrives every day at
  `--ev-arrive-hour` needing `--ev-need-kwh` to be full and leaves at `--ev-depart-hour`; the
  charger starts a transaction when it arrives (free vend) and draws what its charging profiles
  allow (the lower of ChargePointMaxProfile and the highest-stacked TxDefaultProfile in force at
  the moment, up to the EV's `--ev-kw`; its own maximum once the profiles run out), sending meter
  values every chain minute. With `--ev-start-stop` it answers SetChargingProfile `NotSupported`
  and charges at full power while a transaction runs, started and stopped remotely. With
  `--ev-ocpp 2.0.1` it is an OCPP 2.0.1 charging station instead (the same package's v201): its
  device model answers GetVariables of the SmartChargingCtrlr (`Enabled` false with
  `--ev-start-stop`), it takes ChargingStationMaxProfile and TxDefaultProfile profiles, and
  reports its transaction by TransactionEvent; RequestStart/StopTransaction start and stop it;
- shiftable loads behind switches: a 2 kW boiler switched over MQTT (`--boiler-mqtt HOST:PORT`,
  Tasmota's `cmnd/boiler/POWER` with `ON`/`OFF`, paho-mqtt) and a 1.5 kW heat pump on a Modbus
  coil (`--heat-pump-port P`, coil 0, pymodbus); each turns itself off `--switch-revert-s` real
  seconds after the last command that kept it on, as a switch's auto-off timer does. The plain
  home runs them by timer: on from the start of their windows until the day's energy is done.
  With `--indoor-mqtt HOST:PORT` the heat pump (`--heat-pump-kw`) heats a building instead: a
  first-order RC model (120 m², average insulation) at a constant `--outdoor-c`, whose room
  sensor publishes `home/indoor/temperature` (`{"temperature": °C}`); the plain home's twin
  building runs on a thermostat. With `--heat-pump-setpoint` the heat pump takes its power in W
  on `heatpump/set/power_w` instead (back to nothing `--switch-revert-s` after the last write);
- with `--tank-mqtt HOST:PORT`, a 200 l hot-water tank heated by a 2 kW heat-pump water heater
  switched as Tasmota's `cmnd/water-heater/POWER` (`ON`/`OFF`, off by itself
  `--switch-revert-s` after the last `ON`); 6 kWh of hot water drawn a day (40 % from 06:00 to
  08:00 UTC, 50 % from 18:00 to 21:00, the rest over the day), 1.9 W/K lost to an 18 °C room,
  the COP 2.6 + 0.05 per K of outdoor temperature above 7 °C (1.5-4); its sensor publishes
  `water-heater/tank` (`{"temperature": °C}`) (the plain home has no tank);
- the connection's meter (models 1, 203, positive W importing) computed from the home's balance:
  load (the BDEW H25 profile scaled to the household, with its own daily variation) plus the EV
  and the switched loads minus PV minus battery. With `--meter-mqtt HOST:PORT` the same meter is also published as a
  P1/DSMR bridge does (paho-mqtt): `p1/electricity_delivered_1` and `_2` (kWh, the night and day
  tariff registers), `p1/electricity_returned` (kWh), three decimals, no power topic.

The home's clock is the chain's: read from the node's `/v1/market` every second and run at
`--time-scale` in between (on while the node is away). Alongside it runs the same home without
any control (its battery on self-consumption all the time, its EV charging at full power from
arrival until full): the counterfactual a bill is compared with. Every half second the state goes to `--state` (JSON): the devices now and each slot's
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
from datetime import datetime, timezone

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


def iso(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


class Ev:
    """The car and its charger's state: sessions, the profiles installed, the energy register."""

    CAPACITY_KWH = 60.0

    def __init__(self, a):
        self.a = a
        self.plugged = False
        self.soc = self.CAPACITY_KWH
        self.shadow_soc = self.CAPACITY_KWH
        self.transaction = None
        self.register_wh = 2_000_000.0
        self.kw = 0.0
        self.profiles = {}  # (connector, purpose) -> list of profiles by stack level
        self.sessions = []
        self.limit_w = None
        self.received = {"profiles": 0, "rejected": 0, "remote_start": 0, "remote_stop": 0}

    def window(self, ms):
        hour = time.gmtime(ms / 1000).tm_hour
        a, d = self.a.ev_arrive_hour, self.a.ev_depart_hour
        return (a <= hour or hour < d) if a > d else (a <= hour < d)

    def limit_at(self, ms):
        """The composite limit in force (W), None where no profile is."""
        limits = []
        for (_, purpose), plist in self.profiles.items():
            best = None
            for p in plist:
                sched = p["charging_schedule"]
                start = parse_iso(sched.get("start_schedule") or p.get("valid_from") or iso(ms))
                if p.get("valid_from") and ms < parse_iso(p["valid_from"]):
                    continue
                if p.get("valid_to") and ms >= parse_iso(p["valid_to"]):
                    continue
                if sched.get("duration") is not None and ms >= start + sched["duration"] * 1000:
                    continue
                if ms < start:
                    continue
                if best is None or p["stack_level"] > best[0]["stack_level"]:
                    periods = [q for q in sched["charging_schedule_period"]
                               if start + q["start_period"] * 1000 <= ms]
                    if periods:
                        lim = float(periods[-1]["limit"])
                        if sched["charging_rate_unit"] == "A":
                            lim *= 230.0 * 3
                        best = (p, lim)
            if best is not None:
                limits.append(best[1])
        return min(limits) if limits else None

    def step(self, ms, dt_h):
        """The EV's power (kW) now, for the real home and the plain one."""
        kw = 0.0
        if self.plugged and self.transaction is not None:
            self.limit_w = self.limit_at(ms)
            kw = self.a.ev_kw if self.limit_w is None else min(self.a.ev_kw, self.limit_w / 1000)
            kw = max(0.0, min(kw, (self.CAPACITY_KWH - self.soc) / dt_h if dt_h > 0 else 0.0))
        self.kw = kw
        self.soc += kw * dt_h
        self.register_wh += kw * dt_h * 1000
        shadow = 0.0
        if self.plugged and dt_h > 0:
            shadow = max(0.0, min(self.a.ev_kw, (self.CAPACITY_KWH - self.shadow_soc) / dt_h))
        self.shadow_soc += shadow * dt_h
        if self.sessions and self.plugged:
            arrived_with = self.CAPACITY_KWH - self.a.ev_need_kwh
            self.sessions[-1]["charged_kwh"] = self.soc - arrived_with
            self.sessions[-1]["plain_charged_kwh"] = self.shadow_soc - arrived_with
        return kw, shadow


def charge_point_class():
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint as Cp
    from ocpp.v16 import call_result
    from ocpp.v16.enums import (Action, ChargingProfileStatus, ClearChargingProfileStatus,
                                RemoteStartStopStatus)

    class ChargePoint(Cp):
        ev = None
        smart = True
        config = {
            "ChargeProfileMaxStackLevel": "3",
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": "24",
            "MaxChargingProfilesInstalled": "4",
        }
        remote = []

        @on(Action.get_configuration)
        def on_get_configuration(self, key=None, **_):
            keys = key or list(self.config)
            known = [{"key": k, "readonly": True, "value": self.config[k]} for k in keys if k in self.config]
            unknown = [k for k in keys if k not in self.config]
            return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

        @on(Action.set_charging_profile)
        def on_set_charging_profile(self, connector_id, cs_charging_profiles, **_):
            if not self.smart:
                self.ev.received["rejected"] += 1
                return call_result.SetChargingProfile(status=ChargingProfileStatus.not_supported)
            p = cs_charging_profiles
            key = (connector_id, p["charging_profile_purpose"])
            plist = [q for q in self.ev.profiles.get(key, [])
                     if q["charging_profile_id"] != p["charging_profile_id"]
                     and q["stack_level"] != p["stack_level"]]
            self.ev.profiles[key] = plist + [p]
            self.ev.received["profiles"] += 1
            return call_result.SetChargingProfile(status=ChargingProfileStatus.accepted)

        @on(Action.clear_charging_profile)
        def on_clear_charging_profile(self, id=None, **_):
            for key in list(self.ev.profiles):
                self.ev.profiles[key] = [q for q in self.ev.profiles[key]
                                         if id is not None and q["charging_profile_id"] != id]
            return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.accepted)

        @on(Action.remote_start_transaction)
        def on_remote_start(self, id_tag, **_):
            ok = self.ev.plugged and self.ev.transaction is None
            self.ev.received["remote_start"] += 1
            if ok:
                self.remote.append(("start", id_tag))
            return call_result.RemoteStartTransaction(
                status=RemoteStartStopStatus.accepted if ok else RemoteStartStopStatus.rejected)

        @on(Action.remote_stop_transaction)
        def on_remote_stop(self, transaction_id, **_):
            ok = self.ev.transaction == transaction_id
            self.ev.received["remote_stop"] += 1
            if ok:
                self.remote.append(("stop", None))
            return call_result.RemoteStopTransaction(
                status=RemoteStartStopStatus.accepted if ok else RemoteStartStopStatus.rejected)

    return ChargePoint


def station_class():
    """The OCPP 2.0.1 charging station: the same EV, its profiles kept in 1.6J's shape (one
    schedule, `charging_profile_id`) so the composite limit is computed one way."""
    from ocpp.exceptions import NotSupportedError
    from ocpp.routing import on
    from ocpp.v201 import ChargePoint as Cp
    from ocpp.v201 import call_result
    from ocpp.v201.enums import Action
    from ocpp201_charging_station import variable_results

    class Station(Cp):
        ev = None
        smart = True
        remote = []

        def variables(self):
            return {"Enabled": "true" if self.smart else "false", "RateUnit": "A,W",
                    "PeriodsPerSchedule": "24", "ProfileStackLevel": "3",
                    "Entries/ChargingProfiles": "4"}

        @on(Action.get_variables)
        def on_get_variables(self, get_variable_data, **_):
            results, _ = variable_results(get_variable_data, self.variables())
            return call_result.GetVariables(get_variable_result=results)

        @on(Action.set_charging_profile)
        def on_set_charging_profile(self, evse_id, charging_profile, **_):
            if not self.smart:
                self.ev.received["rejected"] += 1
                raise NotSupportedError(description="smart charging is disabled")
            p = dict(charging_profile)
            p["charging_schedule"] = p["charging_schedule"][0]
            p["charging_profile_id"] = p["id"]
            key = (evse_id, p["charging_profile_purpose"])
            plist = [q for q in self.ev.profiles.get(key, [])
                     if q["charging_profile_id"] != p["charging_profile_id"]
                     and q["stack_level"] != p["stack_level"]]
            self.ev.profiles[key] = plist + [p]
            self.ev.received["profiles"] += 1
            return call_result.SetChargingProfile(status="Accepted")

        @on(Action.clear_charging_profile)
        def on_clear_charging_profile(self, charging_profile_id=None, **_):
            for key in list(self.ev.profiles):
                self.ev.profiles[key] = [q for q in self.ev.profiles[key]
                                         if charging_profile_id is not None
                                         and q["charging_profile_id"] != charging_profile_id]
            return call_result.ClearChargingProfile(status="Accepted")

        @on(Action.request_start_transaction)
        def on_request_start(self, id_token, remote_start_id, **_):
            ok = self.ev.plugged and self.ev.transaction is None
            self.ev.received["remote_start"] += 1
            if ok:
                self.remote.append(("start", id_token["id_token"]))
            return call_result.RequestStartTransaction(status="Accepted" if ok else "Rejected")

        @on(Action.request_stop_transaction)
        def on_request_stop(self, transaction_id, **_):
            ok = self.ev.transaction == transaction_id
            self.ev.received["remote_stop"] += 1
            if ok:
                self.remote.append(("stop", None))
            return call_result.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    return Station


class Ocpp16:
    """What the charger tells the central system, in 1.6J."""

    subprotocol = "ocpp1.6"

    def __init__(self, cp, world, ev, tag):
        from ocpp.v16 import call
        from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus
        self.cp, self.world, self.ev, self.tag = cp, world, ev, tag
        self.call, self.err, self.st = call, ChargePointErrorCode, ChargePointStatus

    async def status(self, what):
        s = {"available": self.st.available, "plugged": self.st.preparing,
             "charging": self.st.charging, "suspended": self.st.suspended_evse}[what]
        await self.cp.call(self.call.StatusNotification(connector_id=1, error_code=self.err.no_error,
                                                        status=s))

    async def boot(self):
        await self.cp.call(self.call.BootNotification(charge_point_model="Wallbox-11",
                                                      charge_point_vendor="virtual-home"))

    async def start_tx(self):
        r = await self.cp.call(self.call.StartTransaction(
            connector_id=1, id_tag=self.tag, meter_start=int(self.ev.register_wh),
            timestamp=iso(self.world.now_ms())))
        self.ev.transaction = r.transaction_id
        await self.status("charging")

    async def stop_tx(self, reason):
        tx, self.ev.transaction = self.ev.transaction, None
        await self.cp.call(self.call.StopTransaction(
            transaction_id=tx, meter_stop=int(self.ev.register_wh),
            timestamp=iso(self.world.now_ms()), id_tag=self.tag, reason=reason))

    async def meter(self, now):
        ev = self.ev
        await self.cp.call(self.call.MeterValues(connector_id=1, transaction_id=ev.transaction, meter_value=[{
            "timestamp": iso(now),
            "sampledValue": [
                {"value": f"{ev.register_wh:.1f}", "measurand": "Energy.Active.Import.Register",
                 "unit": "Wh"},
                {"value": f"{ev.kw * 1000:.0f}", "measurand": "Power.Active.Import", "unit": "W"},
            ],
        }]))


class Ocpp201:
    """What the charging station tells the central system, in 2.0.1."""

    subprotocol = "ocpp2.0.1"

    def __init__(self, cp, world, ev, tag):
        from ocpp.v201 import call
        self.cp, self.world, self.ev, self.tag, self.call = cp, world, ev, tag, call
        self.seq, self.count = 0, 0

    async def status(self, what):
        s = "Available" if what == "available" else "Occupied"
        await self.cp.call(self.call.StatusNotification(
            timestamp=iso(self.world.now_ms()), connector_status=s, evse_id=1, connector_id=1))

    async def boot(self):
        await self.cp.call(self.call.BootNotification(
            charging_station={"model": "Wallbox-22", "vendor_name": "virtual-home"}, reason="PowerUp"))

    def register(self, now, context):
        return [{"timestamp": iso(now), "sampled_value": [
            {"value": round(self.ev.register_wh, 1), "measurand": "Energy.Active.Import.Register",
             "unit_of_measure": {"unit": "Wh"}, "context": context},
            {"value": round(self.ev.kw * 1000), "measurand": "Power.Active.Import",
             "unit_of_measure": {"unit": "W"}, "context": context}]}]

    async def event(self, kind, trigger, state, context, **extra):
        now = self.world.now_ms()
        await self.cp.call(self.call.TransactionEvent(
            event_type=kind, timestamp=iso(now), trigger_reason=trigger, seq_no=self.seq,
            transaction_info={"transaction_id": self.ev.transaction, "charging_state": state,
                              **extra.pop("info", {})},
            meter_value=self.register(now, context), **extra))
        self.seq += 1

    async def start_tx(self):
        self.count += 1
        self.ev.transaction = f"vh-{self.count}-{self.world.now_ms()}"
        await self.event("Started", "Authorized", "Charging", "Transaction.Begin",
                         evse={"id": 1, "connector_id": 1},
                         id_token={"id_token": self.tag, "type": "Local"})

    async def stop_tx(self, reason):
        await self.event("Ended", "RemoteStop" if reason == "Remote" else "EVCommunicationLost",
                         "Idle", "Transaction.End",
                         info={"stopped_reason": "Remote" if reason == "Remote" else "EVDisconnected"})
        self.ev.transaction = None

    async def meter(self, now):
        await self.event("Updated", "MeterValuePeriodic", "Charging", "Sample.Periodic")


async def charger(a, world, ev):
    """The charge point: connects (again) to the home's central system and tells it what the
    EV does."""
    import websockets

    ChargePoint = station_class() if a.ev_ocpp == "2.0.1" else charge_point_class()
    Proto = Ocpp201 if a.ev_ocpp == "2.0.1" else Ocpp16
    ChargePoint.ev = ev
    ChargePoint.smart = not a.ev_start_stop
    cp_id = a.ev_url.rstrip("/").rsplit("/", 1)[1]
    tag = "EV-OWNER"
    while True:
        try:
            ws = await websockets.connect(a.ev_url, subprotocols=[Proto.subprotocol], open_timeout=2)
        except Exception:
            await asyncio.sleep(0.2)
            continue
        cp = ChargePoint(cp_id, ws)
        cp.remote = []
        runner = asyncio.create_task(cp.start())

        proto = Proto(cp, world, ev, tag)
        status, start_tx, stop_tx = proto.status, proto.start_tx, proto.stop_tx

        try:
            await proto.boot()
            await status("plugged" if ev.plugged else "available")
            if ev.plugged and ev.transaction is not None:
                await status("charging")
            last_meter = world.now_ms()
            while True:
                await asyncio.sleep(0.02)
                now = world.now_ms()
                want = ev.window(now)
                if want and not ev.plugged:
                    ev.plugged = True
                    ev.soc = ev.shadow_soc = Ev.CAPACITY_KWH - a.ev_need_kwh
                    ev.sessions.append({"arrived_ms": now, "departed_ms": None, "need_kwh": a.ev_need_kwh,
                                        "charged_kwh": 0.0, "plain_charged_kwh": 0.0})
                    await status("plugged")
                    await start_tx()
                elif not want and ev.plugged:
                    if ev.transaction is not None:
                        await stop_tx("EVDisconnected")
                    ev.plugged = False
                    ev.sessions[-1]["departed_ms"] = now
                    await status("available")
                while cp.remote:
                    what, _ = cp.remote.pop(0)
                    if what == "start" and ev.plugged and ev.transaction is None:
                        await start_tx()
                    elif what == "stop" and ev.transaction is not None:
                        await stop_tx("Remote")
                        await status("suspended")
                if ev.transaction is not None and now - last_meter >= 60_000:
                    last_meter = now
                    await proto.meter(now)
        except Exception:
            # The home went away: the charger goes on by its profiles and connects again.
            pass
        runner.cancel()
        try:
            await ws.close()
        except Exception:
            pass
        await asyncio.sleep(0.2)


class Coils(ModbusSequentialDataBlock):
    """The heat pump's coils: remembers that a client wrote (every write keeps it on)."""

    def __init__(self, address, values):
        super().__init__(address, values)
        self.written = False

    def setValues(self, address, values):
        self.written = True
        super().setValues(address, values)


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
    ap.add_argument("--ev-url", help="the home's central system, ws://HOST:PORT/ocpp/ID")
    ap.add_argument("--ev-arrive-hour", type=int, default=23)
    ap.add_argument("--ev-depart-hour", type=int, default=7)
    ap.add_argument("--ev-need-kwh", type=float, default=20.0)
    ap.add_argument("--ev-kw", type=float, default=11.0)
    ap.add_argument("--ev-start-stop", action="store_true")
    ap.add_argument("--ev-ocpp", choices=["1.6", "2.0.1"], default="1.6",
                    help="the OCPP version the charger speaks")
    ap.add_argument("--meter-mqtt", help="also publish the meter as a P1 bridge, HOST:PORT")
    ap.add_argument("--boiler-mqtt", help="a boiler switched on this broker, HOST:PORT")
    ap.add_argument("--heat-pump-port", type=int, help="a heat pump on a Modbus coil here")
    ap.add_argument("--switch-revert-s", type=float, default=3.0)
    ap.add_argument("--indoor-mqtt", help="the heat pump heats a building whose room sensor "
                    "publishes on this broker, HOST:PORT (home/indoor/temperature)")
    ap.add_argument("--heat-pump-kw", type=float, default=3.0)
    ap.add_argument("--heat-pump-setpoint", action="store_true",
                    help="the heat pump takes its power in W on heatpump/set/power_w (on the "
                    "--indoor-mqtt broker) instead of a coil")
    ap.add_argument("--outdoor-c", type=float, default=3.0)
    ap.add_argument("--tank-mqtt", help="a hot-water tank whose heater is switched, and whose "
                    "sensor publishes, on this broker, HOST:PORT")
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

    # The switched loads: name -> state. Windows and energies as the test's home config says.
    switched = {}
    if a.boiler_mqtt:
        switched["boiler"] = {"kw": 2.0, "window": (10, 16), "kwh": 3.0}
    if a.heat_pump_port and a.indoor_mqtt and not a.heat_pump_setpoint:
        # Heating a building: on whenever commanded (no timer of its own; the plain home below
        # runs a thermostat instead).
        switched["heat_pump"] = {"kw": a.heat_pump_kw, "window": (0, 24), "kwh": 0.0}
    elif a.heat_pump_port:
        switched["heat_pump"] = {"kw": 1.5, "window": (0, 6), "kwh": 4.0}
    for sw in switched.values():
        sw.update({"on": False, "kept_at": 0.0, "commands": 0, "days": {}, "plain_days": {},
                   "outside_kwh": 0.0, "reverted_at": None})

    def command(name, on):
        sw = switched[name]
        sw["commands"] += 1
        if on:
            sw["kept_at"] = time.monotonic()
        sw["on"] = on

    def mqtt_client(address, client_id, topic=None, on_message=None):
        """A paho client connected to HOST:PORT, its loop running; subscribed to `topic`."""
        import paho.mqtt.client as mqtt
        host, port = address.rsplit(":", 1)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if topic:
            c.on_connect = lambda c, u, f, r, p: c.subscribe(topic)
            c.on_message = on_message
        c.connect(host, int(port))
        c.loop_start()
        return c

    if a.boiler_mqtt:
        mqtt_client(a.boiler_mqtt, "virtual-boiler", "cmnd/boiler/POWER",
                    lambda c, u, m: command("boiler", m.payload.decode().strip().upper() == "ON"))

    # The building the heat pump heats (120 m², average insulation: UA 0.168 kW/K, C 5.5 kWh/K,
    # 0.3 kW of gains) under a constant outdoor temperature, and its room sensor; the plain
    # home's twin building on a thermostat (on below 20.5 °C, off above 21 °C).
    building = None
    if a.indoor_mqtt:
        building = {"indoor_c": 21.0, "plain_indoor_c": 21.0, "plain_on": False, "days": {},
                    "published": 0.0, "setpoint_kw": 0.0, "set_at": 0.0, "setpoints": 0}

        def setpoint(c, u, m):
            try:
                kw = float(m.payload.decode().strip()) / 1000.0
            except ValueError:
                return
            building["setpoint_kw"] = min(max(kw, 0.0), a.heat_pump_kw)
            building["set_at"] = time.monotonic()
            building["setpoints"] += 1

        sensor = mqtt_client(a.indoor_mqtt, "virtual-room-sensor",
                             "heatpump/set/power_w" if a.heat_pump_setpoint else None, setpoint)

    # The hot-water tank (200 l: 0.2326 kWh/K; 1.9 W/K to an 18 °C room) and its switched
    # heat-pump water heater.
    tank = None
    if a.tank_mqtt:
        tank = {"tank_c": 50.0, "on": False, "kept_at": 0.0, "commands": 0, "published": 0.0}

        def water_heater(c, u, m):
            on = m.payload.decode().strip().upper() == "ON"
            tank["commands"] += 1
            if on:
                tank["kept_at"] = time.monotonic()
            tank["on"] = on

        tank_sensor = mqtt_client(a.tank_mqtt, "virtual-water-heater", "cmnd/water-heater/POWER",
                                  water_heater)

    def draw_kw(hour):
        day = 6.0
        return 0.1 * day / 24 + (0.4 * day / 2 if 6 <= hour < 8 else
                                 0.5 * day / 3 if 18 <= hour < 21 else 0.0)

    def rc(temp, kw, dt_h):
        ua, cap, gains = 0.168, 5.5, 0.3
        cop = min(max(3.5 + 0.07 * (a.outdoor_c - 7.0), 1.8), 5.0)
        k = math.exp(-ua * dt_h / cap)
        return k * temp + (1 - k) * (a.outdoor_c + (cop * kw + gains) / ua)

    coils = Coils(1, [False] * 8)
    bat = Battery(a, a.battery_kwh / 2)
    shadow = Battery(a, a.battery_kwh / 2)
    ev = Ev(a)
    pv_wh, imp_wh, exp_wh = 1000.0, 1000.0, 1000.0
    # The P1 bridge's two import registers: night (22-07 UTC) and day.
    p1 = {"t1": 500.0, "t2": 500.0}
    p1_client = mqtt_client(a.meter_mqtt, "virtual-p1-bridge") if a.meter_mqtt else None
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
            house = world.load_kw(now)
            # The switched loads: auto-off, energy, and the plain home's timers.
            if a.heat_pump_port:
                # A client's write to coil 0 lands at address 1 (pymodbus adds 1 off zero mode).
                if coils.written:
                    coils.written = False
                    command("heat_pump", bool(coils.getValues(1, 1)[0]))
            hour = time.gmtime(now / 1000).tm_hour
            day = str(int(now // 86_400_000))
            switched_kw, plain_switched_kw = 0.0, 0.0
            for name, sw in switched.items():
                if sw["on"] and real - sw["kept_at"] > a.switch_revert_s:
                    sw["on"] = False
                    sw["reverted_at"] = now
                    if name == "heat_pump":
                        coils.setValues(1, [False])
                        coils.written = False
                inside = sw["window"][0] <= hour < sw["window"][1]
                if sw["on"]:
                    switched_kw += sw["kw"]
                    if inside:
                        sw["days"][day] = sw["days"].get(day, 0.0) + sw["kw"] * dt_h
                    else:
                        sw["outside_kwh"] += sw["kw"] * dt_h
                done = sw["plain_days"].get(day, 0.0)
                if inside and done < sw["kwh"]:
                    step = min(sw["kw"] * dt_h, sw["kwh"] - done)
                    sw["plain_days"][day] = done + step
                    plain_switched_kw += step / dt_h if dt_h > 0 else 0.0
            heat_kw, plain_heat = 0.0, 0.0
            if building is not None:
                if a.heat_pump_setpoint:
                    # The setpoint reverts to nothing without a write, as a switch does.
                    if real - building["set_at"] > a.switch_revert_s:
                        building["setpoint_kw"] = 0.0
                    heat_kw = building["setpoint_kw"]
                else:
                    heat_kw = a.heat_pump_kw if switched["heat_pump"]["on"] else 0.0
                    switched_kw -= heat_kw
                building["indoor_c"] = rc(building["indoor_c"], heat_kw, dt_h)
                if building["plain_indoor_c"] < 20.5:
                    building["plain_on"] = True
                elif building["plain_indoor_c"] > 21.0:
                    building["plain_on"] = False
                plain_heat_kw = a.heat_pump_kw if building["plain_on"] else 0.0
                building["plain_indoor_c"] = rc(building["plain_indoor_c"], plain_heat_kw, dt_h)
                plain_heat = plain_heat_kw
                d = building["days"].setdefault(day, {"min_c": 99.0, "max_c": -99.0, "kwh": 0.0,
                                                      "plain_kwh": 0.0})
                d["min_c"] = min(d["min_c"], building["indoor_c"])
                d["max_c"] = max(d["max_c"], building["indoor_c"])
                d["kwh"] += heat_kw * dt_h
                d["plain_kwh"] += plain_heat_kw * dt_h
                if real - building["published"] > 0.2:
                    building["published"] = real
                    sensor.publish("home/indoor/temperature",
                                               json.dumps({"temperature": round(building["indoor_c"], 2)}))
            water_kw = 0.0
            if tank is not None:
                if tank["on"] and real - tank["kept_at"] > a.switch_revert_s:
                    tank["on"] = False
                water_kw = 2.0 if tank["on"] else 0.0
                cop = min(max(2.6 + 0.05 * (a.outdoor_c - 7.0), 1.5), 4.0)
                hour_f = (now / 3_600_000) % 24
                loss = 0.0019 * (tank["tank_c"] - 18.0)
                tank["tank_c"] += dt_h * (cop * water_kw - draw_kw(hour_f) - loss) / 0.2326
                if real - tank["published"] > 0.2:
                    tank["published"] = real
                    tank_sensor.publish("water-heater/tank",
                                        json.dumps({"temperature": round(tank["tank_c"], 2)}))
            house_plain = house + plain_switched_kw + plain_heat
            house += switched_kw + heat_kw + water_kw
            ev_kw, plain_ev_kw = ev.step(now, dt_h) if a.ev_url else (0.0, 0.0)
            load = house + ev_kw
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
            sb = shadow.step(house_plain + plain_ev_kw - avail, -wmax, wmax, dt_h)
            sgrid = house_plain + plain_ev_kw - avail - sb
            pv_wh += pv * dt_h * 1000
            if grid > 0:
                imp_wh += grid * dt_h * 1000
                hour = time.gmtime(now / 1000).tm_hour
                p1["t1" if (hour >= 22 or hour < 7) else "t2"] += grid * dt_h
            else:
                exp_wh += -grid * dt_h * 1000
            slot = str(int((now - 1) // SLOT_MS))
            s = slots.setdefault(slot, {"battery_kwh": 0.0, "import_kwh": 0.0, "export_kwh": 0.0,
                                        "pv_kwh": 0.0, "load_kwh": 0.0, "controlled_h": 0.0,
                                        "plain_import_kwh": 0.0, "plain_export_kwh": 0.0,
                                        "ev_kwh": 0.0, "plain_ev_kwh": 0.0, "switched_kwh": 0.0,
                                        "plain_switched_kwh": 0.0, "heat_kwh": 0.0,
                                        "plain_heat_kwh": 0.0, "hours": 0.0})
            s["battery_kwh"] += b * dt_h
            s["import_kwh"] += max(grid, 0) * dt_h
            s["export_kwh"] += max(-grid, 0) * dt_h
            s["pv_kwh"] += pv * dt_h
            s["load_kwh"] += load * dt_h
            s["ev_kwh"] += ev_kw * dt_h
            s["switched_kwh"] += switched_kw * dt_h
            s["heat_kwh"] += heat_kw * dt_h
            if tank is not None:
                s["water_kwh"] = s.get("water_kwh", 0.0) + water_kw * dt_h
                s["tank_min_c"] = min(s.get("tank_min_c", 999.0), tank["tank_c"])
                s["tank_max_c"] = max(s.get("tank_max_c", -99.0), tank["tank_c"])
            if building is not None:
                s["indoor_min_c"] = min(s.get("indoor_min_c", 99.0), building["indoor_c"])
                s["indoor_max_c"] = max(s.get("indoor_max_c", -99.0), building["indoor_c"])
            s["plain_heat_kwh"] += plain_heat * dt_h
            s["plain_switched_kwh"] += plain_switched_kw * dt_h
            s["plain_ev_kwh"] += plain_ev_kw * dt_h
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
            if p1_client is not None:
                p1_client.publish("p1/electricity_delivered_1", f"{p1['t1']:.3f}")
                p1_client.publish("p1/electricity_delivered_2", f"{p1['t2']:.3f}")
                p1_client.publish("p1/electricity_returned", f"{exp_wh / 1000:.3f}")
            state.update({"now_ms": now, "pv_kw": pv, "pv_available_kw": avail, "load_kw": load,
                          "battery_kw": b, "grid_kw": grid, "soc_kwh": bat.soc,
                          "storctl_mod": mode, "pv_limit_enabled": rd("pv", 123, "WMaxLim_Ena"),
                          "ev": {"plugged": ev.plugged, "kw": ev.kw, "limit_w": ev.limit_w,
                                 "transaction": ev.transaction, "register_wh": ev.register_wh,
                                 "sessions": ev.sessions, "received": ev.received},
                          "switched": switched,
                          "building": building, "tank": tank})

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
    if a.ev_url:
        loop.create_task(charger(a, world, ev))
    servers = []
    for name, port in [("pv", a.pv_port), ("battery", a.battery_port), ("meter", a.meter_port)]:
        ctx = ModbusServerContext(slaves=ModbusSlaveContext(hr=blocks[name]), single=True)
        servers.append(StartAsyncTcpServer(context=ctx, address=("127.0.0.1", port)))
    if a.heat_pump_port:
        ctx = ModbusServerContext(slaves=ModbusSlaveContext(co=coils), single=True)
        servers.append(StartAsyncTcpServer(context=ctx, address=("127.0.0.1", a.heat_pump_port)))
    loop.call_later(0.5, lambda: print("ready", flush=True))
    await asyncio.gather(*servers)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
