"""An OCPP 2.0.1 charging station, built with the `ocpp` package (mobilityhouse), against our
central system. The package checks every message both ways against the OCPP 2.0.1 JSON schemas.

With smart charging (`--smart-charging on`): boot, status, authorize, and the central system's
requests after boot (GetVariables of the SmartChargingCtrlr, SetChargingProfile on evse 0 and 1,
GetCompositeSchedule, computed here from the profiles held); then a transaction with meter
values (TransactionEvent Started, Updated, Ended), after which the plan is cleared
(ClearChargingProfile). Its configuration is narrow on purpose: the rate unit and periods per
schedule given on the command line, so the central system must read them first and adapt.

Without (`--smart-charging off`): the device model says SmartChargingCtrlr.Enabled = false; the
car is plugged in and the station waits for RequestStartTransaction, charges with meter values
until RequestStopTransaction, and ends the transaction.

Usage: ocpp201_charging_station.py --url ws://HOST:PORT/ocpp/CS_1 [--smart-charging on|off]
       [--rate-unit A|W|A,W] [--periods 2] [--meter-values 3] [--power-w 7400]
Prints one JSON line with what it received.
"""

import argparse
import asyncio
import json
from datetime import datetime, timezone

import websockets
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on
from ocpp.v201 import ChargePoint as Cp
from ocpp.v201 import call, call_result
from ocpp.v201.enums import Action


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def variable_results(get_variable_data, known):
    """GetVariables results: each asked SmartChargingCtrlr variable (`Name` or `Name/instance`)
    from `known`, `UnknownVariable` for the others. The names asked, as `Component.Name`."""
    results, asked = [], []
    for d in get_variable_data:
        comp, var = d["component"]["name"], d["variable"]
        name = var["name"] + ("/" + var["instance"] if var.get("instance") else "")
        asked.append(f"{comp}.{name}")
        value = known.get(name) if comp == "SmartChargingCtrlr" else None
        r = {"attribute_status": "Accepted" if value is not None else "UnknownVariable",
             "component": d["component"], "variable": var}
        if value is not None:
            r["attribute_value"] = value
        results.append(r)
    return results, asked


def limit_at(periods, t):
    """The limit in force at second t of a schedule, or None before its first period."""
    lim = None
    for p in periods:
        if p["start_period"] <= t:
            lim = p["limit"]
    return lim


class Station(Cp):
    def __init__(self, *a, variables, **kw):
        super().__init__(*a, **kw)
        self.variables = variables
        self.asked = []
        self.profiles = {}  # (evse, purpose) -> profile
        self.set_requests = []
        self.composite_requests = []
        self.cleared = []
        self.remote_start = asyncio.Event()
        self.remote_stop = asyncio.Event()
        self.remote_start_id = None

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data, **_):
        results, asked = variable_results(get_variable_data, self.variables)
        self.asked.extend(asked)
        return call_result.GetVariables(get_variable_result=results)

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, evse_id, charging_profile, **_):
        if self.variables["Enabled"] != "true":
            raise NotSupportedError(description="smart charging is disabled")
        sched = charging_profile["charging_schedule"][0]
        units = self.variables["RateUnit"].split(",")
        ok = (sched["charging_rate_unit"] in units
              and len(sched["charging_schedule_period"]) <= int(self.variables["PeriodsPerSchedule"])
              and charging_profile["stack_level"] <= int(self.variables["ProfileStackLevel"]))
        self.set_requests.append({"evse_id": evse_id, "profile": charging_profile, "accepted": ok})
        if ok:
            self.profiles[(evse_id, charging_profile["charging_profile_purpose"])] = charging_profile
        return call_result.SetChargingProfile(status="Accepted" if ok else "Rejected")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, duration, evse_id, charging_rate_unit=None, **_):
        self.composite_requests.append({"duration": duration, "evse_id": evse_id})
        # The lowest limit of the station-wide maximum and the evse's own profile, per period.
        scheds = [p["charging_schedule"][0] for (e, _), p in self.profiles.items()
                  if e in (0, evse_id)]
        if not scheds:
            return call_result.GetCompositeSchedule(status="Rejected")
        unit = charging_rate_unit or scheds[0]["charging_rate_unit"]
        starts = sorted({p["start_period"] for s in scheds for p in s["charging_schedule_period"]
                         if p["start_period"] < duration})
        periods = []
        for t in starts:
            lims = [limit_at(s["charging_schedule_period"], t) for s in scheds]
            lims = [x for x in lims if x is not None]
            if lims and (not periods or periods[-1]["limit"] != min(lims)):
                periods.append({"start_period": t, "limit": min(lims)})
        return call_result.GetCompositeSchedule(status="Accepted", schedule={
            "evse_id": evse_id, "duration": duration, "schedule_start": now(),
            "charging_rate_unit": unit, "charging_schedule_period": periods})

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, **kw):
        self.cleared.append(kw)
        known = any(p["id"] == kw.get("charging_profile_id") for p in self.profiles.values())
        self.profiles = {k: p for k, p in self.profiles.items()
                         if p["id"] != kw.get("charging_profile_id")}
        return call_result.ClearChargingProfile(status="Accepted" if known else "Unknown")

    @on(Action.request_start_transaction)
    def on_request_start(self, id_token, remote_start_id, evse_id=None, **_):
        self.remote_start_id = remote_start_id
        self.remote_start.set()
        return call_result.RequestStartTransaction(status="Accepted")

    @on(Action.request_stop_transaction)
    def on_request_stop(self, transaction_id, **_):
        self.remote_stop.set()
        return call_result.RequestStopTransaction(status="Accepted")


def register(meter_wh, power_w, context):
    values = [{"value": round(meter_wh / 1000, 4), "measurand": "Energy.Active.Import.Register",
               "unit_of_measure": {"unit": "kWh"}, "context": context}]
    if power_w is not None:
        values.append({"value": power_w, "measurand": "Power.Active.Import",
                       "unit_of_measure": {"unit": "W"}, "context": context})
    return [{"timestamp": now(), "sampled_value": values}]


async def wait_for(cond, seconds):
    for _ in range(int(seconds / 0.05)):
        if cond():
            return True
        await asyncio.sleep(0.05)
    return False


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--smart-charging", choices=["on", "off"], default="on")
    ap.add_argument("--rate-unit", default="W")
    ap.add_argument("--periods", default="2")
    ap.add_argument("--meter-values", type=int, default=3)
    ap.add_argument("--power-w", type=int, default=7400)
    ap.add_argument("--id-token", default="RFID-0042")
    a = ap.parse_args()
    variables = {"Enabled": "true" if a.smart_charging == "on" else "false",
                 "RateUnit": a.rate_unit, "PeriodsPerSchedule": a.periods,
                 "ProfileStackLevel": "3", "Entries/ChargingProfiles": "4"}
    cs_id = a.url.rstrip("/").rsplit("/", 1)[1]
    async with websockets.connect(a.url, subprotocols=["ocpp2.0.1"]) as ws:
        out = {"subprotocol": ws.subprotocol}
        st = Station(cs_id, ws, variables=variables)
        runner = asyncio.create_task(st.start())
        boot = await st.call(call.BootNotification(
            charging_station={"model": "Wallbox-22", "vendor_name": "interop"}, reason="PowerUp"))
        out["boot"] = boot.status
        out["heartbeat"] = (await st.call(call.Heartbeat())).current_time
        await st.call(call.StatusNotification(timestamp=now(), connector_status="Available",
                                              evse_id=1, connector_id=1))
        bad = await st.call(call.Authorize(id_token={"id_token": "UNKNOWN", "type": "ISO14443"}))
        out["unknown_token"] = bad.id_token_info["status"]
        auth = await st.call(call.Authorize(id_token={"id_token": a.id_token, "type": "ISO14443"}))
        out["authorize"] = auth.id_token_info["status"]
        if a.smart_charging == "on":
            # The central system's smart-charging requests after boot.
            await wait_for(lambda: st.composite_requests, 5)
        else:
            await wait_for(lambda: st.asked, 5)
        await st.call(call.StatusNotification(timestamp=now(), connector_status="Occupied",
                                              evse_id=1, connector_id=1))
        tx_id = "tx-" + cs_id
        seq = 0
        if a.smart_charging == "off":
            out["remote_start"] = await wait_for(st.remote_start.is_set, 20)
        meter = 1_000_000  # Wh register at the start
        started = await st.call(call.TransactionEvent(
            event_type="Started", timestamp=now(),
            trigger_reason="RemoteStart" if a.smart_charging == "off" else "Authorized",
            seq_no=seq, transaction_info={"transaction_id": tx_id, "charging_state": "Charging",
                                          **({"remote_start_id": st.remote_start_id}
                                             if st.remote_start_id is not None else {})},
            evse={"id": 1, "connector_id": 1},
            id_token={"id_token": a.id_token, "type": "ISO14443"},
            meter_value=register(meter, None, "Transaction.Begin")))
        out["started"] = started.id_token_info["status"] if started.id_token_info else None
        n = 0
        while True:
            if a.smart_charging == "on" and n >= a.meter_values:
                break
            if a.smart_charging == "off" and (st.remote_stop.is_set() or n >= 100):
                break
            await asyncio.sleep(0.3)
            seq += 1
            n += 1
            meter += a.power_w * 0.3 / 3600
            await st.call(call.TransactionEvent(
                event_type="Updated", timestamp=now(), trigger_reason="MeterValuePeriodic",
                seq_no=seq, transaction_info={"transaction_id": tx_id, "charging_state": "Charging"},
                meter_value=register(meter, a.power_w, "Sample.Periodic")))
        out["updates"] = n
        out["remote_stop"] = st.remote_stop.is_set()
        seq += 1
        await st.call(call.TransactionEvent(
            event_type="Ended", timestamp=now(),
            trigger_reason="RemoteStop" if st.remote_stop.is_set() else "EVCommunicationLost",
            seq_no=seq, transaction_info={"transaction_id": tx_id, "charging_state": "Idle",
                                          "stopped_reason": "Remote" if st.remote_stop.is_set()
                                          else "EVDisconnected"},
            meter_value=register(meter, None, "Transaction.End")))
        await st.call(call.StatusNotification(timestamp=now(), connector_status="Available",
                                              evse_id=1, connector_id=1))
        await wait_for(lambda: st.cleared, 3)
        out["asked"] = st.asked
        out["set_requests"] = st.set_requests
        out["composite_requests"] = st.composite_requests
        out["cleared"] = st.cleared
        out["energy_wh"] = int(meter) - 1_000_000
        runner.cancel()
        print(json.dumps(out, default=float), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
