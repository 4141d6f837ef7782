"""Write the three-week site CSVs that ``examples/data_spec.yaml`` reads (seeded, reproducible).

Run from the repository root: ``.venv/bin/python -m examples.make_spec_csvs``. The files are
shaped like public exports: hourly UTC rows from 2023-03-01 to 2023-03-21 (504 h), day-ahead prices
with negative midday hours at the solar site, carbon intensity and temperature. ``dc0-solar`` and
``dc1-wind`` give capacity factors; ``dc2-weather`` gives raw weather in other units instead —
cloud cover in percent, 10 m wind speed in km/h, temperature in deg F — and carbon intensity in
lb/MWh, so loading it exercises the weather path (pvlib, windpowerlib) and the unit conversions.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent / "spec"
START = "2023-03-01T00:00:00Z"
HOURS = 21 * 24


def _write(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)


def main(seed: int = 2023) -> None:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=HOURS, freq="h")
    h = ts.hour.to_numpy(dtype=float)
    sun = np.maximum(0.0, np.sin(np.pi * (h - 6.0) / 12.0))
    evening = (h >= 17) & (h < 21)
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    HERE.mkdir(exist_ok=True)
    for s, kind in enumerate(("solar", "wind", "weather")):
        price = 70.0 + 8.0 * s + 70.0 * evening - 20.0 * ((h >= 1) & (h < 5)) + rng.normal(0, 6, HOURS)
        if kind == "solar":
            price -= 110.0 * sun  # midday glut: negative hours
        temp_c = 9.0 + 6.0 * np.sin(2 * np.pi * (h - 9.0) / 24.0) + 2.0 * s + rng.normal(0, 1, HOURS)
        carbon = (560.0 - 150.0 * s) * (1.0 - 0.3 * sun) + rng.normal(0, 15, HOURS)
        frame = pd.DataFrame({"timestamp": stamp, "price_usd_per_mwh": np.round(price, 2)})
        if kind == "weather":
            frame["carbon_lb_per_mwh"] = np.round(carbon / 0.45359237, 1)
            frame["temp_f"] = np.round(temp_c * 9.0 / 5.0 + 32.0, 1)
            cloud = np.clip(50 + np.cumsum(rng.normal(0, 8, HOURS)) % 100 - 0.0, 0, 100)
            frame["cloud_cover_pct"] = np.round(cloud, 0)
            wind = np.abs(18.0 + np.cumsum(rng.normal(0, 2.0, HOURS)) % 30)
            frame["wind_kmh"] = np.round(wind, 1)
        else:
            frame["carbon_g_per_kwh"] = np.round(carbon, 1)
            frame["temp_c"] = np.round(temp_c, 1)
            if kind == "solar":
                frame["solar_cf"] = np.round(0.85 * sun * rng.uniform(0.6, 1.0, HOURS), 3)
            else:
                x = np.zeros(HOURS)
                for t in range(1, HOURS):
                    x[t] = 0.92 * x[t - 1] + rng.normal(0, 0.07)
                frame["wind_cf"] = np.round(np.clip(0.45 + x, 0.0, 1.0), 3)
        _write(frame, HERE / f"dc{s}-{kind}.csv")


if __name__ == "__main__":
    main()
