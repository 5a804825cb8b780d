"""The command line: ``python -m scripts.lib.lslocal --help`` (from the repository root).

ensure-venv   create Label Studio's venv and its database template
start         run Label Studio in the foreground (optionally writing a new PAT to a file)
token         print a new personal access token, or the legacy token
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from backend.ls_auth import LabelStudioError
from scripts.lib.lslocal.auth import create_personal_access_token, get_legacy_token
from scripts.lib.lslocal.process import DEFAULT_START_TIMEOUT_S, start_label_studio
from scripts.lib.lslocal.venv import (
    LABEL_STUDIO_VERSION,
    default_ls_venv_dir,
    ensure_db_template,
    ensure_ls_venv,
)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so `with server:` stops Label Studio on the way out."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _cli_start(args: argparse.Namespace) -> int:
    _exit_on_sigterm()
    venv = ensure_ls_venv(args.venv)
    server = start_label_studio(
        venv,
        args.data_dir,
        args.port,
        args.username,
        args.password,
        user_token=args.user_token,
        enable_legacy_api_token=args.enable_legacy_api_token,
        start_timeout_s=args.timeout,
    )
    with server:
        print(f"Label Studio is up at {server.url} after {server.started_in_s:.1f} s (log {server.log_path})")
        if args.token_file:
            token = create_personal_access_token(server.url, args.username, args.password)
            Path(args.token_file).write_text(token + "\n")
            os.chmod(args.token_file, 0o600)
            print(f"personal access token written to {args.token_file}")
        print("Ctrl-C stops it.")
        try:
            while server.is_running():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        if not server.is_running():
            print(f"Label Studio exited:\n{server.log_tail()}", file=sys.stderr)
            return 1
    return 0


def _cli_token(args: argparse.Namespace) -> int:
    if args.kind == "pat":
        print(create_personal_access_token(args.url, args.username, args.password))
    else:
        print(get_legacy_token(args.url, args.username, args.password))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.lib.lslocal",
        description="Run and drive a local Label Studio " + LABEL_STUDIO_VERSION,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    venv = commands.add_parser("ensure-venv", help="create the Label Studio venv and its database template")
    venv.add_argument("--venv", default=None, help=f"default: $LS_VENV_DIR or {default_ls_venv_dir()}")

    start = commands.add_parser("start", help="start Label Studio in the foreground")
    start.add_argument("--venv", default=None, help="default: $LS_VENV_DIR or the shared cache")
    start.add_argument("--data-dir", required=True)
    start.add_argument("--port", type=int, default=8080)
    start.add_argument("--username", default="admin@example.com")
    start.add_argument(
        "--password", default=os.environ.get("LABEL_STUDIO_PASSWORD"), help="default: $LABEL_STUDIO_PASSWORD"
    )
    start.add_argument("--user-token", default=None, help="legacy token to give the user on first start")
    start.add_argument("--enable-legacy-api-token", action="store_true", help="on first start only")
    start.add_argument("--token-file", help="write a new personal access token here")
    start.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S)

    token = commands.add_parser("token", help="print a new personal access token (pat) or the legacy token")
    token.add_argument("kind", choices=["pat", "legacy"])
    token.add_argument("--url", default="http://127.0.0.1:8080")
    token.add_argument("--username", default="admin@example.com")
    token.add_argument("--password", default=os.environ.get("LABEL_STUDIO_PASSWORD"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "password", "") is None:
        raise SystemExit("give --password or set LABEL_STUDIO_PASSWORD")
    try:
        if args.command == "ensure-venv":
            ensure_db_template(ensure_ls_venv(args.venv))
            print(f"Label Studio {LABEL_STUDIO_VERSION} ready in {ensure_ls_venv(args.venv)}")
            return 0
        if args.command == "start":
            return _cli_start(args)
        return _cli_token(args)
    except LabelStudioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
