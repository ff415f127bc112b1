"""``python -m leakaudit``: the ``leakaudit`` command, for environments where the console script is not on PATH."""

from leakaudit.cli import main

if __name__ == "__main__":
    main()
