"""``rlhf label ...``: the labeling service, its accounts and the preference loop.

::

    rlhf label serve start  [CONFIG] [key=value ...] [--foreground]
    rlhf label serve stop   [CONFIG] [key=value ...]
    rlhf label serve status [CONFIG] [key=value ...] [--json]
    rlhf label users add NAME [CONFIG] [key=value ...] [--role annotator|admin|owner] [--workspace WS ...]
                                                       [--password-stdin]
    rlhf label users list [CONFIG] [key=value ...] [--json]
    rlhf label users remove NAME [CONFIG] [key=value ...] --yes
    rlhf label workspaces add NAME | list | remove NAME   [CONFIG] [key=value ...]
    rlhf label push|simulate|status|pull [CONFIG] [key=value ...]     (the preference loop: label_loop_cmd)

As every ``rlhf`` command, each takes an optional YAML config (here with ``stage: label``) and dotted
overrides (``rlhf label serve start service.port=6901``); user and workspace names, ``--json`` and the other
flags are not config keys. ``users`` and ``workspaces`` talk to the embedded service, or to an external Argilla
when ``argilla.api_url`` or ``ARGILLA_API_URL`` is set (key in ``ARGILLA_API_KEY``).

The group is built from registrar functions (``REGISTRARS``), each adding one subcommand with small handler
functions ``(args) -> exit code`` that import the labeling client only when they run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from rlhf.cli.common import add_config_arguments, load_stage_config
from rlhf.cli.label_loop_cmd import LOOP_REGISTRARS  # the preference loop: push, simulate, status, pull
from rlhf.core.errors import UserError
from rlhf.labeling.config import ROLES

if TYPE_CHECKING:
    from rlhf.labeling.config import LabelingConfig
    from rlhf.labeling.http import ArgillaHTTP
    from rlhf.labeling.service import ServiceStatus

__all__ = ["REGISTRARS", "add_parser", "label_config", "label_http"]


# ------------------------------------------------------------------------------------------- shared helpers
def label_config(args: argparse.Namespace, command: str) -> LabelingConfig:
    """The validated ``label`` config named on the command line (``[CONFIG] [key=value ...]``)."""
    return cast("LabelingConfig", load_stage_config(args, "label", f"label {command}"))


def label_http(config: LabelingConfig) -> ArgillaHTTP:
    """A raw-API client for the Argilla the config points at (the embedded service by default)."""
    from rlhf.labeling.connection import http_client, resolve_connection

    return http_client(resolve_connection(config.argilla, config.service))


def _print_status(status: ServiceStatus, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps({"status": status.status, "url": status.url, "home": str(status.home),
                          "run_dir": str(status.run_dir) if status.run_dir else None, "pids": status.pids,
                          "error": status.error}, indent=2))
    else:
        print(status.describe())


# ------------------------------------------------------------------------------------------- serve
def _serve_start(args: argparse.Namespace) -> int:
    from rlhf.labeling.service import start_service

    config = label_config(args, "serve start")
    status = start_service(config.service, foreground=args.foreground)
    _print_status(status)
    if status.running:
        print(f"open {status.url} and log in as '{config.service.owner_username}'; the password is in "
              f"{status.home / 'secrets.json'} (or RLHF_LABEL_OWNER_PASSWORD)")
    return 0 if status.status in ("running", "stopped") else 1


def _serve_stop(args: argparse.Namespace) -> int:
    from rlhf.labeling.service import stop_service

    _print_status(stop_service(label_config(args, "serve stop").service))
    return 0


def _serve_status(args: argparse.Namespace) -> int:
    from rlhf.labeling.service import service_status

    status = service_status(label_config(args, "serve status").service)
    _print_status(status, args.json)
    return 0 if status.running else 3


def _add_serve(groups: argparse._SubParsersAction) -> None:
    serve = groups.add_parser("serve", help="run the embedded Argilla service (server, worker, Redis) on loopback")
    actions = serve.add_subparsers(dest="serve_command", metavar="ACTION")
    start = actions.add_parser("start", help="start the service (creates the server venv the first time)")
    add_config_arguments(start, "label")
    start.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    start.set_defaults(func=_serve_start)
    stop = actions.add_parser("stop", help="stop the service cleanly")
    add_config_arguments(stop, "label")
    stop.set_defaults(func=_serve_stop)
    status = actions.add_parser("status", help="state, URL, process ids and log folder; exit 3 unless running")
    add_config_arguments(status, "label")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=_serve_status)
    serve.set_defaults(func=lambda _args: _help(serve))


# ------------------------------------------------------------------------------------------- users
def _users_add(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import create_user

    config = label_config(args, "users add NAME")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    workspaces = tuple(args.workspace or [config.service.workspace])
    with label_http(config) as http:
        created = create_user(http, args.name, role=args.role, password=password, workspaces=workspaces)
    print(f"created {created.user.role} '{created.user.username}' in workspace(s) {', '.join(workspaces)}")
    if not args.password_stdin:
        print(f"password: {created.password}")
    print(f"api key: {created.api_key}")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import list_users, user_workspaces

    with label_http(label_config(args, "users list")) as http:
        rows = [(u, user_workspaces(http, u.username)) for u in list_users(http)]
    if args.json:
        print(json.dumps([{"username": u.username, "role": u.role, "id": u.id, "workspaces": ws} for u, ws in rows],
                         indent=2))
        return 0
    width = max([len(u.username) for u, _ in rows] + [8])
    for user, workspaces in rows:
        print(f"{user.username:<{width}}  {user.role:<9}  {', '.join(workspaces) or '-'}")
    return 0


def _users_remove(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import delete_user

    if not args.yes:
        raise UserError(f"removing '{args.name}' also deletes every response they gave; add --yes to confirm")
    with label_http(label_config(args, "users remove NAME")) as http:
        user = delete_user(http, args.name)
    print(f"removed {user.role} '{user.username}'")
    return 0


def _add_users(groups: argparse._SubParsersAction) -> None:
    users = groups.add_parser("users", help="annotator accounts")
    actions = users.add_subparsers(dest="users_command", metavar="ACTION")
    add = actions.add_parser("add", help="create a user; prints its password (once) and API key")
    add.add_argument("name", help="username (lowercase letters, digits, '-' and '_')")
    add_config_arguments(add, "label")
    add.add_argument("--role", default="annotator", choices=ROLES)
    add.add_argument("--workspace", action="append", help="workspace to join (repeatable; default service.workspace)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin instead of generating it")
    add.set_defaults(func=_users_add)
    listing = actions.add_parser("list", help="users with their role and workspaces")
    add_config_arguments(listing, "label")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_users_list)
    remove = actions.add_parser("remove", help="delete a user and their responses")
    remove.add_argument("name")
    add_config_arguments(remove, "label")
    remove.add_argument("--yes", action="store_true", help="confirm that their responses go too")
    remove.set_defaults(func=_users_remove)
    users.set_defaults(func=lambda _args: _help(users))


# ------------------------------------------------------------------------------------------- workspaces
def _workspaces_add(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import ensure_workspace

    with label_http(label_config(args, "workspaces add NAME")) as http:
        ws = ensure_workspace(http, args.name)
    print(f"workspace '{ws.name}' ({ws.id})")
    return 0


def _workspaces_list(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import list_workspaces

    with label_http(label_config(args, "workspaces list")) as http:
        for ws in list_workspaces(http):
            print(ws.name)
    return 0


def _workspaces_remove(args: argparse.Namespace) -> int:
    from rlhf.labeling.users import delete_workspace

    with label_http(label_config(args, "workspaces remove NAME")) as http:
        ws = delete_workspace(http, args.name)
    print(f"removed workspace '{ws.name}'")
    return 0


def _add_workspaces(groups: argparse._SubParsersAction) -> None:
    workspaces = groups.add_parser("workspaces", help="workspaces (a dataset and its annotators share one)")
    actions = workspaces.add_subparsers(dest="workspaces_command", metavar="ACTION")
    add = actions.add_parser("add", help="create a workspace (nothing to do if it exists)")
    add.add_argument("name")
    add_config_arguments(add, "label")
    add.set_defaults(func=_workspaces_add)
    listing = actions.add_parser("list", help="workspace names")
    add_config_arguments(listing, "label")
    listing.set_defaults(func=_workspaces_list)
    remove = actions.add_parser("remove", help="delete an empty workspace")
    remove.add_argument("name")
    add_config_arguments(remove, "label")
    remove.set_defaults(func=_workspaces_remove)
    workspaces.set_defaults(func=lambda _args: _help(workspaces))


# ------------------------------------------------------------------------------------------- the group
def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_serve, _add_users, _add_workspaces, *LOOP_REGISTRARS]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``rlhf label`` and its subcommands."""
    label = subparsers.add_parser("label", help="the Argilla labeling service and the preference loop",
                                  description="The Argilla labeling service (serve, users, workspaces) and the "
                                              "preference loop (push, simulate, status, pull); every command "
                                              "takes [CONFIG] [key=value ...].")
    groups = label.add_subparsers(dest="label_command", metavar="COMMAND")
    for register in REGISTRARS:
        register(groups)
    label.set_defaults(func=lambda _args: _help(label))
