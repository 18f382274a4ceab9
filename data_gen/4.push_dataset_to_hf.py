"""Step 4: upload a dataset folder made by step 3 to the Hugging Face Hub (a dataset repo).

    python data_gen/4.push_dataset_to_hf.py --path DIR --repo_id USER/NAME [--private]

The token comes from the environment (HF_TOKEN) or a saved login (`hf auth login`); it is
never printed or saved. Fails fast, with one line, when offline, not logged in, or the Hub
cannot be reached. Afterwards ``datasets.load_dataset("USER/NAME")`` reads the same data as
``datasets.load_dataset(DIR)``.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.errors import ConfigError, DataError, run_cli  # noqa: E402

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message} (see --help)")


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--path", required=True, help="dataset folder written by data_gen/3.generate_dataset_synthetic.py")
    p.add_argument("--repo_id", required=True, help="USER/NAME (or ORG/NAME) of the dataset repo; created if missing")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--message", default=None, help="commit message (default: 'Upload dataset made by restorelab')")
    return p.parse_args(argv)


def check_dataset_folder(path: Path) -> None:
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    if not (path / "README.md").is_file() or not list((path / "data").glob("*.parquet")):
        raise DataError(f"{path} is not a finished dataset folder (needs README.md and data/*.parquet; "
                        "run step 3, and its --merge for job arrays, first)")


def _hub_failure(exc: Exception, token: str, endpoint: str) -> DataError:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return DataError("offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")
    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return DataError(f"the Hugging Face Hub rejected the token (HTTP {status}); "
                             "check HF_TOKEN or run `hf auth login` with a token that has write access")
        first = str(exc).replace(token, "***").splitlines()[0] if str(exc) else type(exc).__name__
        return DataError(f"the Hugging Face Hub refused the request (HTTP {status}): {first}")
    return DataError(f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}); "
                     "check the network connection (or HF_ENDPOINT)")


def _is_network_error(exc: Exception) -> bool:
    name = type(exc).__module__.split(".")[0]
    return isinstance(exc, OSError) or name.startswith(("httpx", "httpcore", "requests", "urllib3"))


def main(argv=None) -> int:
    args = parse_args(argv)
    folder = Path(args.path)
    if not REPO_ID.match(args.repo_id):
        raise ConfigError(f"--repo_id must look like USER/NAME, got {args.repo_id!r}")
    check_dataset_folder(folder)

    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if constants.HF_HUB_OFFLINE:
        raise DataError("offline mode is on (HF_HUB_OFFLINE=1); unset it to upload")
    token = os.environ.get("HF_TOKEN") or get_token()
    if not token:
        raise DataError("not logged in to the Hugging Face Hub: set HF_TOKEN or run `hf auth login`")
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
        url = api.create_repo(args.repo_id, repo_type="dataset", private=args.private, exist_ok=True)
        print(f"uploading {folder} to {url} as {user} ...", flush=True)
        api.upload_folder(repo_id=args.repo_id, repo_type="dataset", folder_path=str(folder),
                          commit_message=args.message or "Upload dataset made by restorelab",
                          ignore_patterns=[".*", "*/.*"])  # hidden temp files of an interrupted run
    except (HfHubHTTPError, OfflineModeIsEnabled) as exc:
        raise _hub_failure(exc, token, constants.ENDPOINT) from None
    except Exception as exc:
        if _is_network_error(exc):
            raise _hub_failure(exc, token, constants.ENDPOINT) from None
        raise
    print(f"done: datasets.load_dataset({args.repo_id!r})")
    return 0


if __name__ == "__main__":
    run_cli(main)
