"""Home Assistant's side of MQTT discovery, played by paho-mqtt: collects the retained discovery
configs under the prefix, the devices' state and availability, then announces HA online
(`<prefix>/status` = `online`, as HA does when it starts) and counts the configs published again.

Usage: ha_check.py --port P [--prefix homeassistant] [--wait 3]
Also counts the signed telemetry samples the home publishes to the community's gateway on the same
broker (`gridmesh/<chain>/telemetry/<device>`, 132 bytes a sample).
Prints one JSON document: {"configs": {topic: payload}, "states": {topic: payload},
"availability": {topic: text}, "republished": n, "telemetry": {"messages": n, "whole": bool}}.
"""

import argparse
import json
import time

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", default="homeassistant")
    ap.add_argument("--wait", type=float, default=3.0)
    a = ap.parse_args()

    configs, states, availability = {}, {}, {}
    telemetry = {"messages": 0, "whole": True}
    phase = {"announced": False, "republished": 0}

    def on_message(_c, _u, msg):
        if "/telemetry/" in msg.topic:
            telemetry["messages"] += 1
            telemetry["whole"] &= len(msg.payload) > 0 and len(msg.payload) % 132 == 0
            return
        text = msg.payload.decode()
        if msg.topic.startswith(a.prefix + "/") and msg.topic.endswith("/config"):
            if phase["announced"]:
                phase["republished"] += 1
            configs[msg.topic] = json.loads(text)
        elif msg.topic.endswith("/state"):
            states[msg.topic] = json.loads(text)
        elif msg.topic.endswith("/availability"):
            availability[msg.topic] = text

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ha-check")
    c.on_message = on_message
    c.connect("127.0.0.1", a.port)
    c.subscribe([(a.prefix + "/#", 1), ("gridmesh/#", 1)])
    c.loop_start()
    time.sleep(a.wait)
    phase["announced"] = True
    c.publish(a.prefix + "/status", "online", qos=1)
    time.sleep(a.wait)
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"configs": configs, "states": states, "availability": availability,
                      "republished": phase["republished"], "telemetry": telemetry}))


if __name__ == "__main__":
    main()
