"""An OCPP 1.6J charge point, built with the `ocpp` package (mobilityhouse), against our central
system: boot, status, authorize, a transaction with meter values, and whatever smart-charging
requests the central system sends (GetConfiguration, SetChargingProfile, ClearChargingProfile).

Its smart-charging configuration is deliberately narrow: it takes limits in amperes only and at
most 2 periods per schedule, so the central system must read the keys first and adapt.

Usage: ocpp_charge_point.py --url ws://HOST:PORT/ocpp/CP_1 [--meter-values 5] [--power-w 7400]
Prints one JSON line with what it received.
"""

import argparse
import asyncio
import json
from datetime import datetime, timezone

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as Cp
from ocpp.v16 import call, call_result
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargePointErrorCode,
    ChargePointStatus,
    ChargingProfileStatus,
    ClearChargingProfileStatus,
    RegistrationStatus,
)

CONFIG = {
    "ChargeProfileMaxStackLevel": "3",
    "ChargingScheduleAllowedChargingRateUnit": "Current",
    "ChargingScheduleMaxPeriods": "2",
    "MaxChargingProfilesInstalled": "4",
}


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChargePoint(Cp):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.asked_keys = None
        self.profiles = []
        self.cleared = []

    @on(Action.get_configuration)
    def on_get_configuration(self, key=None, **_):
        self.asked_keys = key
        keys = key or list(CONFIG)
        known = [{"key": k, "readonly": True, "value": CONFIG[k]} for k in keys if k in CONFIG]
        unknown = [k for k in keys if k not in CONFIG]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id, cs_charging_profiles, **_):
        sched = cs_charging_profiles["charging_schedule"]
        ok = (sched["charging_rate_unit"] == "A"
              and len(sched["charging_schedule_period"]) <= int(CONFIG["ChargingScheduleMaxPeriods"])
              and cs_charging_profiles["stack_level"] <= int(CONFIG["ChargeProfileMaxStackLevel"]))
        self.profiles.append({"connector_id": connector_id, "profile": cs_charging_profiles,
                              "accepted": ok})
        return call_result.SetChargingProfile(
            status=ChargingProfileStatus.accepted if ok else ChargingProfileStatus.rejected)

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, **kw):
        self.cleared.append(kw)
        return call_result.ClearChargingProfile(status=ClearChargingProfileStatus.accepted)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--meter-values", type=int, default=5)
    ap.add_argument("--power-w", type=int, default=7400)
    ap.add_argument("--id-tag", default="RFID-0042")
    a = ap.parse_args()
    cp_id = a.url.rstrip("/").rsplit("/", 1)[1]
    async with websockets.connect(a.url, subprotocols=["ocpp1.6"]) as ws:
        cp = ChargePoint(cp_id, ws)
        runner = asyncio.create_task(cp.start())
        out = {}
        boot = await cp.call(call.BootNotification(charge_point_model="Wallbox-11",
                                                   charge_point_vendor="interop"))
        out["boot"] = boot.status
        out["heartbeat"] = (await cp.call(call.Heartbeat())).current_time
        await cp.call(call.StatusNotification(connector_id=1, error_code=ChargePointErrorCode.no_error,
                                              status=ChargePointStatus.available))
        bad = await cp.call(call.Authorize(id_tag="UNKNOWN-TAG"))
        out["unknown_tag"] = bad.id_tag_info["status"]
        auth = await cp.call(call.Authorize(id_tag=a.id_tag))
        out["authorize"] = auth.id_tag_info["status"]
        # Wait for the central system's smart-charging requests after boot.
        for _ in range(100):
            if len(cp.profiles) >= 2:
                break
            await asyncio.sleep(0.05)
        meter = 1_000_000  # Wh register at the start
        start = await cp.call(call.StartTransaction(connector_id=1, id_tag=a.id_tag,
                                                    meter_start=meter, timestamp=now()))
        tx = start.transaction_id
        out["transaction_id"] = tx
        await cp.call(call.StatusNotification(connector_id=1, error_code=ChargePointErrorCode.no_error,
                                              status=ChargePointStatus.charging))
        for _ in range(a.meter_values):
            await asyncio.sleep(0.3)
            meter += a.power_w * 0.3 / 3600
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tx, meter_value=[{
                "timestamp": now(),
                "sampledValue": [
                    {"value": f"{meter / 1000:.4f}", "measurand": "Energy.Active.Import.Register",
                     "unit": "kWh"},
                    {"value": str(a.power_w), "measurand": "Power.Active.Import", "unit": "W"},
                ],
            }]))
        stop = await cp.call(call.StopTransaction(transaction_id=tx, meter_stop=int(meter),
                                                  timestamp=now(), id_tag=a.id_tag))
        out["stop"] = stop.id_tag_info["status"] if stop.id_tag_info else None
        await cp.call(call.StatusNotification(connector_id=1, error_code=ChargePointErrorCode.no_error,
                                              status=ChargePointStatus.available))
        for _ in range(40):
            if cp.cleared:
                break
            await asyncio.sleep(0.05)
        out["asked_keys"] = cp.asked_keys
        out["profiles"] = cp.profiles
        out["cleared"] = cp.cleared
        out["energy_wh"] = int(meter) - 1_000_000
        runner.cancel()
        print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
