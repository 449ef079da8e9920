"""A device publishing signed telemetry and a slot reading over MQTT with paho-mqtt.

Written from the documented wire format only (gridmesh_ledger::telemetry and gridmesh_gateway::mqtt),
with PyNaCl for ed25519 and the blake3 package for hashes: a second implementation of what a device
sends, so the node's MQTT ingest is tested against a client and encoder we did not write.

Usage: mqtt_device.py --port P --chain ID --key KEYFILE --slot S [--samples N] [--power-w W]
                      [--register-mwh R] [--inflate-mwh X] [--junk-bytes N,M,...]
Prints one JSON line: the device, the slot's commitment (root, count) and what was published.
"""

import argparse
import json
import struct
import sys
import time

import blake3
import nacl.signing
import paho.mqtt.client as mqtt

SLOT_MS = 15 * 60 * 1000
TELEMETRY_DOMAIN = b"gridmesh/telemetry/v1\0"
READING_DOMAIN = b"gridmesh/device-reading/v1\0"


def h(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def merkle_root(leaves):
    if not leaves:
        return h(b"")
    level = list(leaves)
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                nxt.append(h(b"\x01" + level[i] + level[i + 1]))
            else:
                nxt.append(level[i])
        level = nxt
    return level[0]


def chain_bytes(chain: str) -> bytes:
    c = chain.encode()
    return struct.pack("<I", len(c)) + c


def sample(key, chain, seq, time_ms, out_mwh, in_mwh, power_w):
    body = bytes(key.verify_key) + struct.pack("<QQQQi", seq, time_ms, out_mwh, in_mwh, power_w)
    sig = key.sign(TELEMETRY_DOMAIN + chain_bytes(chain) + body).signature
    return body + sig


def reading(key, chain, slot, out_mwh, in_mwh, register_mwh, root, count):
    device = bytes(key.verify_key)
    fields = struct.pack("<QQQQ", slot, out_mwh, in_mwh, register_mwh)
    msg = READING_DOMAIN + chain_bytes(chain) + device + fields + root + struct.pack("<I", count)
    sig = key.sign(msg).signature
    # Borsh of DeviceReading: fields in order, fixed arrays as raw bytes.
    return device + fields + root + struct.pack("<I", count) + sig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chain", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--slot", type=int, required=True)
    ap.add_argument("--samples", type=int, default=900)
    ap.add_argument("--power-w", type=int, default=2000)
    ap.add_argument("--register-mwh", type=int, default=0)
    ap.add_argument("--inflate-mwh", type=int, default=0,
                    help="claim this much more energy (and register) than the telemetry shows")
    ap.add_argument("--per-message", type=int, default=100)
    ap.add_argument("--junk-bytes", default="",
                    help="first publish retained junk of these sizes on the telemetry topics")
    a = ap.parse_args()

    with open(a.key) as f:
        key = nacl.signing.SigningKey(bytes.fromhex(json.load(f)["secret_key"]))
    dev_hex = bytes(key.verify_key).hex()

    start = a.slot * SLOT_MS
    step_ms = SLOT_MS // a.samples
    per_step_mwh = a.power_w * step_ms // 3600  # W x ms / 3600 = mWh
    samples = []
    reg = a.register_mwh
    for i in range(1, a.samples + 1):
        reg += per_step_mwh
        samples.append(sample(key, a.chain, i, start + i * step_ms, reg, 0, a.power_w))
    root = merkle_root([h(s) for s in samples])
    energy = reg - a.register_mwh

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"device-{dev_hex[:8]}")
    client.connect("127.0.0.1", a.port)
    client.loop_start()
    topic = f"gridmesh/{a.chain}/telemetry/{dev_hex}"
    infos = []
    # Retained junk (what a broken or hostile publisher leaves on the broker): every subscriber
    # gets it again on each (re)connect.
    for i, size in enumerate(int(n) for n in a.junk_bytes.split(",") if n):
        junk = bytes((i * 7 + j) % 251 for j in range(size))
        infos.append(client.publish(f"gridmesh/{a.chain}/telemetry/junk-{i}", junk, qos=1, retain=True))
    for i in range(0, len(samples), a.per_message):
        infos.append(client.publish(topic, b"".join(samples[i:i + a.per_message]), qos=1))
    # A replay of the first message, a forged sample (register changed after signing) and a
    # truncated payload: the node must refuse all of them and keep the rest.
    infos.append(client.publish(topic, b"".join(samples[:a.per_message]), qos=1))
    forged = bytearray(samples[-1])
    forged[32:40] = struct.pack("<Q", a.samples + 1)
    forged[48:56] = struct.pack("<Q", reg + 10**9)
    infos.append(client.publish(topic, bytes(forged), qos=1))
    infos.append(client.publish(topic, samples[0][:100], qos=1))
    for info in infos:
        info.wait_for_publish(timeout=30)
    # Give the node's ingest a moment to commit the telemetry before the reading arrives (the
    # gateway commits pending samples before checking a reading, but delivery is per topic).
    time.sleep(0.5)
    r = reading(key, a.chain, a.slot, energy + a.inflate_mwh, 0, reg + a.inflate_mwh, root,
                len(samples))
    client.publish(f"gridmesh/{a.chain}/readings/{dev_hex}", r, qos=1).wait_for_publish(timeout=30)
    client.loop_stop()
    client.disconnect()
    print(json.dumps({
        "device": dev_hex,
        "slot": a.slot,
        "root": root.hex(),
        "count": len(samples),
        "energy_out_mwh": energy + a.inflate_mwh,
        "register_mwh": reg + a.inflate_mwh,
        "messages": len(infos) + 1,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
