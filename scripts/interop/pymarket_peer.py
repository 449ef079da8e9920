#!/usr/bin/env python3
"""pymarket as a reference peer for gridmesh's market crate.

  pymarket_peer.py huang < cases.json     clear many order sets with pymarket's Huang auction
  pymarket_peer.py bench ORDERS.json      time pymarket's Huang auction on one order set

Input orders: {"id": int, "side": "bid"|"ask", "energy": float, "price": float}.
`huang` reads {"cases": [[order, ...], ...]} and prints {"results": [{"traded": {id: energy},
"price_buy": float|null, "price_sell": float|null}, ...]}. `bench` prints {"orders": n,
"build_seconds": s, "clear_seconds": s}.
"""
import json
import sys
import time
import warnings

warnings.filterwarnings("ignore")

import pymarket as pm  # noqa: E402


def market(orders):
    bm = pm.BidManager()
    for o in orders:
        bm.add_bid(float(o["energy"]), float(o["price"]), int(o["id"]), o["side"] == "bid")
    mar = pm.Market()
    mar.bm = bm
    return mar


def huang(orders):
    mar = market(orders)
    trans, extra = mar.run("huang")
    traded = {}
    for _, t in trans.get_df().iterrows():
        q = float(t["quantity"])
        if q > 0:
            oid = orders[int(t["bid"])]["id"]
            traded[str(oid)] = traded.get(str(oid), 0.0) + q
    return {
        "traded": traded,
        "price_buy": None if extra.get("price_buy") is None else float(extra["price_buy"]),
        "price_sell": None if extra.get("price_sell") is None else float(extra["price_sell"]),
    }


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "huang":
        cases = json.load(sys.stdin)["cases"]
        json.dump({"results": [huang(c) for c in cases]}, sys.stdout)
    elif mode == "bench":
        with open(sys.argv[2]) as f:
            orders = json.load(f)
        t0 = time.perf_counter()
        mar = market(orders)
        t1 = time.perf_counter()
        mar.run("huang")
        t2 = time.perf_counter()
        json.dump({"orders": len(orders), "build_seconds": t1 - t0, "clear_seconds": t2 - t1}, sys.stdout)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
