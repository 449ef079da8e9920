#!/usr/bin/env python3
"""pvlib's NREL SPA as a reference peer for gridmesh's solar position.

  pvlib_peer.py spa < cases.json

Input: {"cases": [{"unix_s", "lat", "lon", "elev_m", "pressure_mbar", "temp_c", "delta_t_s"}, ...]}.
Output: {"zenith_deg": [...], "azimuth_deg": [...]}: pvlib.spa.solar_position_numpy's topocentric
zenith (refraction included, atmos_refract 0.5667) and azimuth, one per case.
"""
import json
import sys

import numpy as np
from pvlib import spa


def main():
    cases = json.load(sys.stdin)["cases"]
    zen, azi = [], []
    for c in cases:
        theta, _theta0, _e, _e0, phi, _eot = spa.solar_position_numpy(
            np.array([c["unix_s"]], dtype=float), c["lat"], c["lon"], c["elev_m"],
            c["pressure_mbar"], c["temp_c"], c["delta_t_s"], 0.5667, 1)
        zen.append(float(theta[0]))
        azi.append(float(phi[0]))
    json.dump({"zenith_deg": zen, "azimuth_deg": azi}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1:] != ["spa"]:
        sys.exit(__doc__)
    main()
