"""User-facing errors: bad input the user can fix, reported as one line by the CLIs."""
from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn


class RestorelabError(Exception):
    """Base class for errors caused by the user's input (config, files, arguments)."""


class ConfigError(RestorelabError):
    """A config file, key, value or override is wrong."""


class RegistryError(RestorelabError, LookupError):
    """An unknown or ambiguous registered name (network, model, dataset, loss...)."""


class DataError(RestorelabError):
    """A dataset, image or PSF file is missing, empty, unreadable or malformed."""


def fail(message: str) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_cli(main: Callable[[], int | None]) -> None:
    """Run a CLI entry point: user errors become one line and exit code 2.

    Pass ``--debug`` (or set ``RESTORELAB_DEBUG=1``) to see the full traceback instead.
    Unexpected exceptions (bugs) always keep their traceback.
    """
    debug = "--debug" in sys.argv or os.environ.get("RESTORELAB_DEBUG", "") not in ("", "0")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        code = main()
    except RestorelabError as exc:
        if debug:
            raise
        fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    raise SystemExit(code or 0)
