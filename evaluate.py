"""Compare policies on held-out scenarios (placeholder until the agents issue lands)."""

import argparse

from envs import PRESETS, make_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(make_scenario(args.preset, args.seed).summary())


if __name__ == "__main__":
    main()
