"""``make bench`` / ``python -m bench``: every benchmark, printed as tables and written to
``bench/results.md`` (with the machine it ran on). ``--quick`` shrinks repeats and sizes for a smoke
run; ``--only env,oracle,...`` picks sections.

Inputs are checked before any benchmark runs (unknown sections, an ``--out`` that cannot be
written: one line, exit 2). The results file is written atomically at the end. Ctrl-C stops with
one line (exit 130): the finished sections are kept in ``<out>.partial.md`` (``--out`` itself is
left as it was) and the exact command that runs the remaining sections is printed."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
import time
from pathlib import Path

from bench.common import machine, out_problem

SECTIONS = (
    "env",
    "vector",
    "render",
    "oracle",
    "scaling",
    "mpc",
    "decisions",
    "sweeps",
    "dataset",
    "training",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes (smoke run)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated sections from {', '.join(SECTIONS)}"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results.md"), help="Markdown output")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        parser.error(f"--only: unknown sections {unknown or chosen}; choose from {', '.join(SECTIONS)}")
    problem = out_problem(args.out)
    if problem:
        parser.error(f"--out: {problem}")

    from bench import agents_speed, env_speed, oracle_speed, render_speed, vector_speed
    from envs.atomic import atomic_write_text

    q = args.quick
    runners = {
        "env": lambda: env_speed.run(repeats=2 if q else 5, n_steps=1000 if q else 4000),
        "vector": lambda: vector_speed.run(quick=q),
        "render": lambda: render_speed.run(frames=6 if q else 24),
        "oracle": lambda: oracle_speed.presets_section(
            repeats=1 if q else 3, week_limit_s=60.0, large_limit_s=20.0 if q else 120.0
        ),
        "scaling": lambda: oracle_speed.scaling_section(time_limit_s=10.0 if q else 30.0),
        "mpc": agents_speed.mpc_section,
        "decisions": lambda: agents_speed.decision_section(seeds=(0,) if q else (0, 3)),
        "sweeps": lambda: agents_speed.sweep_section(4 if q else 12),
        "dataset": lambda: agents_speed.dataset_section(2 if q else 8),
        "training": lambda: agents_speed.training_section(1024 if q else 4096),
    }
    started = time.perf_counter()
    parts = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}. Run: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
        + (" (--quick)" if q else "")
        + ". Regenerate with `make bench`.",
    ]
    done: list[str] = []
    for name in chosen:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            section = runners[name]()
        except KeyboardInterrupt:
            print(interrupted(args, name, done, chosen, parts), file=sys.stderr)
            return 130
        print(section + "\n", flush=True)
        parts += ["", section, "", f"_{name}: {time.perf_counter() - t0:.0f} s_"]
        done.append(name)
    total = time.perf_counter() - started
    parts += ["", f"Total benchmark time: {total / 60:.1f} min."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(parts) + "\n"
    if set(chosen) != set(SECTIONS) and args.out.is_file():
        # a partial run (--only): replace its sections in the existing file, keep the others
        text = merge_sections(args.out.read_text(), text, parts[2])
    atomic_write_text(args.out, text)
    print(f"Total {total / 60:.1f} min; wrote {args.out}", file=sys.stderr)
    return 0


def _chunks(text: str) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """A results file as its header lines and its ``### <title>`` sections (title, lines); the
    ``Total benchmark time`` line is dropped (it belongs to one run)."""
    head: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("Total benchmark time:"):
            continue
        if line.startswith("### "):
            sections.append((line, [line]))
        elif sections:
            sections[-1][1].append(line)
        else:
            head.append(line)
    return head, sections


def merge_sections(old: str, new: str, run_line: str) -> str:
    """``old`` with each section of ``new`` in place of the section of the same title (new titles are
    appended), and a header line saying which sections ``run_line``'s run updated."""
    head, sections = _chunks(old)
    _, fresh = _chunks(new)
    by_title = dict(fresh)
    merged = [(title, by_title.pop(title, lines)) for title, lines in sections] + list(by_title.items())
    head = [line for line in head if not line.startswith("Partial run (--only):")]
    while head and not head[-1].strip():
        head.pop()
    titles = ", ".join(title[4:] for title, _ in fresh)
    head += ["", f"Partial run (--only): {titles} updated. {run_line}", ""]
    body = "\n".join("\n".join(lines).rstrip("\n") + "\n" for _, lines in merged)
    return "\n".join(head) + "\n" + body


def interrupted(
    args: argparse.Namespace, name: str, done: list[str], chosen: list[str], parts: list[str]
) -> str:
    """Keep the finished sections in ``<out>.partial.md``; one line saying so and how to go on."""
    from envs.atomic import atomic_write_text

    rest = chosen[chosen.index(name) :]
    cmd = ["python", "-m", "bench", *(["--quick"] if args.quick else []), "--only"]
    if not done:
        again = shlex.join([*cmd, ",".join(chosen), "--out", str(args.out)])
        return (
            f"python -m bench: interrupted in section {name!r}; nothing finished or written; rerun: {again}"
        )
    again = shlex.join([*cmd, ",".join(rest), "--out", str(args.out.with_suffix(".rest.md"))])
    partial = args.out.with_suffix(".partial.md")
    partial.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(partial, "\n".join([*parts, "", f"Interrupted in section {name!r}."]) + "\n")
    return (
        f"python -m bench: interrupted in section {name!r}; kept {', '.join(done)} in {partial} "
        f"({args.out} untouched); run the rest with: {again}"
    )


if __name__ == "__main__":
    sys.exit(main())
