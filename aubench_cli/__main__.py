"""Entry point for ``python -m aubench_cli`` and the ``aubench`` console script."""

import sys


def main() -> None:
    try:
        from aubench_cli.cli import run
    except KeyboardInterrupt:  # Ctrl-C while the libraries load: one line, as anywhere else
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
