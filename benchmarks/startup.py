"""Start-up cost of the CLI: `aubench --help` and `import aubench_cli`, as subprocesses, median and spread.

    python benchmarks/startup.py [--repeats 10]

`aubench --help` must stay free of torch (the package exports its Python API lazily); this prints the wall time a
user waits and whether torch was imported.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "aubench --help": [sys.executable, "-m", "aubench_cli", "--help"],
    "import aubench_cli": [sys.executable, "-c", "import aubench_cli"],
    "import aubench_cli.training": [sys.executable, "-c", "import aubench_cli.training.trainer"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits every case alike
        for name, cmd in CASES.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    probe = ("import sys; from aubench_cli.cli import app\ntry:\n    app(['--help'], standalone_mode=False)\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules)")
    torch_loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split()[-1]
    for name, ts in times.items():
        print(f"{name:30s} median {1000 * statistics.median(ts):6.0f} ms  (min {1000 * min(ts):.0f}, "
              f"max {1000 * max(ts):.0f}, n={len(ts)})")
    print(f"torch imported by --help: {torch_loaded}")


if __name__ == "__main__":
    main()
