"""An OpenADR 3.1 VEN against our VTN, built with grid-coordination's python-oa3-client (its
VenClient: the token URL from GET /auth/server, a client-credentials token, the VEN found by name)
on their openadr3 client, whose entity models coerce every object we serve.

It reads the programs and the events it may see (their intervals resolved by openadr3's
inheritance rules), posts a usage report against the price event, subscribes to the price
program with a webhook (a stdlib HTTP server here, its notifications coerced by openadr3), and
tries what a VEN may not: another connection's envelope, writing events, a malformed report, a
wrong secret, another grant type, a made-up token.

Usage: openadr_ven.py --url http://HOST:PORT/openadr/3 --client-id ID --client-secret SECRET
       --name NAME [--foreign-event ID] [--webhook-port P]
Prints one JSON line with what it saw.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
from openadr3.entities import coerce_notification
from openadr3_client import VenClient


class Hooks(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Hooks.received.append({"auth": self.headers.get("Authorization"),
                               "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--foreign-event")
    ap.add_argument("--webhook-port", type=int)
    ap.add_argument("--usage-start", help="RFC 3339: report the meter's usage of the two "
                    "15-minute slots from here (0.42 kWh taken, then 0.25 kWh given)")
    a = ap.parse_args()
    out = {}

    ven = VenClient(url=a.url, client_id=a.client_id, client_secret=a.client_secret).start()
    ven.register(a.name)
    out["ven_id"] = ven.ven_id
    api = ven.api

    programs = api.programs()
    out["programs"] = sorted(p.program_name for p in programs)
    out["payload_types"] = sorted(d.payload_type for p in programs
                                  for d in (p.payload_descriptors or []))
    events = api.events()
    out["events"] = sorted(e.program_id + ":" + (e.event_name or "") for e in events)
    prices = next(e for e in events if e.program_id == "prices")
    resolved = prices.resolved_intervals()
    first, second = resolved[0].interval_period, resolved[1].interval_period
    out["price_intervals"] = len(resolved)
    out["price_step_s"] = (second.start - first.start).in_seconds()
    out["first_price"] = {p.type: float(p.values[0]) for p in resolved[0].payloads}
    envelopes = [e for e in events if e.program_id == "envelopes"]
    out["envelope_events"] = [e.id for e in envelopes]
    if envelopes:
        e = envelopes[0]
        out["envelope_targets"] = e.targets
        first_env = e.resolved_intervals()[0]
        out["envelope_first"] = {p.type: float(p.values[0]) for p in first_env.payloads}
        out["envelope_first_start_s"] = int(first_env.interval_period.start.timestamp())
        out["envelope_event_by_id"] = api.event(e.id).id
    flex = [e for e in events if e.program_id == "flexibility"]
    out["flexibility"] = [{p.type: float(p.values[0]) for i in e.intervals for p in i.payloads}
                          for e in flex]

    # A report of what the meter used in the first price interval.
    report = {
        "programID": "prices", "eventID": prices.id, "clientName": a.name,
        "reportName": "usage", "resources": [{
            "resourceName": "meter", "intervalPeriod": prices._raw["intervalPeriod"],
            "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [0.42]}]}],
        }],
    }
    r = api.create_report(report)
    out["report_status"] = r.status_code
    out["reports"] = [(x.event_id, x.client_name) for x in api.reports()] if r.status_code == 201 else []
    if a.usage_start:
        # The meter's usage of two slots that have ended: the node's readings of its meter.
        usage = dict(report, reportName="meter usage", resources=[{
            "resourceName": "meter",
            "intervalPeriod": {"start": a.usage_start, "duration": "PT15M"},
            "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [0.42]}]},
                          {"id": 1, "payloads": [{"type": "USAGE", "values": [-0.25]}]}],
        }])
        out["usage_report_status"] = api.create_report(usage).status_code

    # What a VEN may not do.
    if a.foreign_event:
        out["foreign_event_status"] = api.get_event_by_id(a.foreign_event).status_code
    out["write_event_status"] = api.create_event({"programID": "prices", "intervals": []}).status_code
    out["bad_report_status"] = api.create_report({"programID": "prices"}).status_code
    out["unknown_event_report_status"] = api.create_report(
        dict(report, eventID="no-such-event")).status_code
    out["unknown_program_status"] = api.get_program_by_id("nope").status_code
    out["bad_subscription_status"] = api.create_subscription({
        "clientName": a.name, "programID": "prices",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["PUT"],
                              "callbackUrl": "ftp://example.org/x"}]}).status_code
    out["unknown_program_subscription_status"] = api.create_subscription({
        "clientName": a.name, "programID": "nope",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["PUT"],
                              "callbackUrl": "http://127.0.0.1:9/x"}]}).status_code
    # None of the refused requests left anything behind.
    out["reports_after_refusals"] = len(api.reports())
    out["subscriptions_after_refusals"] = len(api.subscriptions())
    base = a.url.rstrip("/")
    with httpx.Client() as h:
        out["made_up_token_status"] = h.get(base + "/events",
                                            headers={"Authorization": "Bearer 00ff"}).status_code
        out["no_token_status"] = h.get(base + "/programs").status_code
        wrong = h.post(base + "/auth/token", data={"grant_type": "client_credentials",
                                                   "client_id": a.client_id,
                                                   "client_secret": "wrong"})
        out["wrong_secret"] = [wrong.status_code, wrong.json().get("error")]
        grant = h.post(base + "/auth/token", data={"grant_type": "password", "username": "x"})
        out["password_grant"] = [grant.status_code, grant.json().get("error")]
        basic = h.post(base + "/auth/token", data={"grant_type": "client_credentials"},
                       auth=(a.client_id, a.client_secret))
        out["basic_auth_status"] = basic.status_code

    if a.webhook_port:
        server = HTTPServer(("127.0.0.1", a.webhook_port), Hooks)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sub = api.create_subscription({
            "clientName": a.name, "programID": "prices",
            "objectOperations": [{"objects": ["EVENT"], "operations": ["POST", "PUT"],
                                  "callbackUrl": f"http://127.0.0.1:{a.webhook_port}/notify",
                                  "bearerToken": "hook-secret"}],
        })
        out["subscription_status"] = sub.status_code
        out["subscriptions"] = len(api.subscriptions())
        deadline = time.time() + 15
        while not Hooks.received and time.time() < deadline:
            time.sleep(0.1)
        if Hooks.received:
            first = Hooks.received[0]
            n = coerce_notification(first["body"])
            out["notification"] = {"auth": first["auth"], "operation": n.operation,
                                   "object_type": n.object.object_type,
                                   "event_id": n.object.id}
        server.shutdown()
    ven.stop()
    print(json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()
