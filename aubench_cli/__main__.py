"""Entry point for ``python -m aubench_cli`` and the ``aubench`` console script."""


def main() -> None:
    from aubench_cli.cli import run

    run()


if __name__ == "__main__":
    main()
