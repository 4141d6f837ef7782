"""Worked example of docs/data.md: build a scenario from the three site CSVs in examples/csv/.

Run from the repository root: ``.venv/bin/python -m examples.csv_scenario``. It prints the
scenario's summary and writes it to ``examples/csv_scenario.json`` (the scenario JSON format).
"""

from __future__ import annotations

from pathlib import Path

from envs.data import scenario_from_csv

HERE = Path(__file__).parent


def main() -> None:
    sc = scenario_from_csv(
        [HERE / "csv" / "dc0-solar.csv", HERE / "csv" / "dc1-wind.csv", HERE / "csv" / "dc2-solar.csv"],
        solar_mw=[5.0, 0.0, 12.0],  # installed MW; the files give capacity factors
        wind_mw=[0.0, 8.0, 0.0],
        name="example-2024-07-01",
        carbon_price_usd_per_t=80.0,
    )
    print(sc.summary())
    sc.to_json(HERE / "csv_scenario.json")


if __name__ == "__main__":
    main()
