"""Start argilla-server 2.8 with the ``sqlsearch`` engine: migrate, index, ensure the owner, then serve.

Runs inside the server venv (``argilla_server_plugin/requirements-server.txt``), started and supervised by
``rlhf label serve start`` (``rlhf/labeling/supervisor.py``), which sets the environment:

=============================  ==========================================================================
``ARGILLA_HOME_PATH``          the service's data folder (holds ``argilla.db`` unless a database URL is set)
``ARGILLA_DATABASE_URL``       optional: a PostgreSQL (or SQLite) URL; default SQLite in the home folder
``ARGILLA_REDIS_URL``          the Redis the supervisor started
``ARGILLA_AUTH_SECRET_KEY``    the JWT secret (stable across restarts, so UI sessions survive them)
``ARGILLA_SEARCH_ENGINE``      ``sqlsearch``
``RLHF_LABEL_OWNER_USERNAME``  the owner account, created or brought in line with the password and API key
``RLHF_LABEL_OWNER_PASSWORD``
``RLHF_LABEL_OWNER_API_KEY``
``RLHF_LABEL_WORKSPACE``       the workspace created for annotation datasets
=============================  ==========================================================================

Steps, in order: register the engine (before anything asks the server for it), ``alembic upgrade head``
(what ``python -m argilla_server database migrate`` does), the engine's indexes
(``argilla_sqlsearch.indexes``), on SQLite switch to WAL journaling (readers do
not wait for the writer) and install the text index (``argilla_sqlsearch.fulltext``), ensure the owner
and the workspace, then ``tune_process`` (``tuning.py``: the webhook gate, a frozen startup heap) and
``uvicorn.run`` on the app. With ``--workers N`` (N > 1) the process then replaces
itself (``exec``, same process id for the supervisor) by ``--serve-only``, which runs uvicorn's process
manager over N workers that each import ``argilla_app:app``; the preparation's memory is not kept. Secrets
are read from the environment and never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIRED_ENV = (
    "ARGILLA_HOME_PATH",
    "ARGILLA_REDIS_URL",
    "ARGILLA_AUTH_SECRET_KEY",
    "RLHF_LABEL_OWNER_USERNAME",
    "RLHF_LABEL_OWNER_PASSWORD",
    "RLHF_LABEL_OWNER_API_KEY",
    "RLHF_LABEL_WORKSPACE",
)


def _log(message: str) -> None:
    print(f"[launch_server] {message}", flush=True)


def migrate() -> None:
    """Bring the database schema to Argilla's head revision."""
    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-c", ALEMBIC_CONFIG_FILE, "upgrade", "head"])


def install_indexes() -> None:
    """The indexes the engine's queries need (``argilla_sqlsearch.indexes``), on SQLite and PostgreSQL."""
    from argilla_server.database import sync_engine
    from argilla_sqlsearch import indexes

    with sync_engine.begin() as conn:
        created = indexes.install(conn)
    if created:
        _log(f"created index {', '.join(created)}")


def prepare_sqlite() -> None:
    """WAL journaling and the full-text index (SQLite only)."""
    from argilla_server.database import sync_engine
    from argilla_sqlsearch import fulltext

    if sync_engine.dialect.name != "sqlite":
        return
    with sync_engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.commit()
    with sync_engine.begin() as conn:
        started = time.monotonic()
        if fulltext.install_sqlite(conn):
            _log(f"text index built in {time.monotonic() - started:.1f}s")


async def ensure_owner_and_workspace(username: str, password: str, api_key: str, workspace: str) -> None:
    """Create the owner (or align its role, password and API key with the given ones) and the workspace."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole, Workspace

    async with AsyncSessionLocal() as db:
        user = await accounts.get_user_by_username(db, username)
        if user is None:
            await User.create(
                db,
                first_name=username,
                username=username,
                role=UserRole.owner,
                api_key=api_key,
                password_hash=accounts.hash_password(password),
            )
            _log(f"created owner '{username}'")
        else:
            changes = {}
            if user.role != UserRole.owner:
                changes["role"] = UserRole.owner
            if user.api_key != api_key:
                changes["api_key"] = api_key
            if not accounts.verify_password(password, user.password_hash):
                changes["password_hash"] = accounts.hash_password(password)
            if changes:
                await user.update(db, **changes)
                _log(f"updated owner '{username}' ({', '.join(sorted(changes))})")
        if await Workspace.get_by(db, name=workspace) is None:
            await accounts.create_workspace(db, {"name": workspace})
            _log(f"created workspace '{workspace}'")


def main() -> int:
    parser = argparse.ArgumentParser(description="argilla-server with the sqlsearch engine")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6900)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--serve-only", action="store_true", help="skip the preparation (after an exec)")
    args = parser.parse_args()

    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print(f"launch_server: missing environment {', '.join(missing)}; start it with 'rlhf label serve start'",
              file=sys.stderr)
        return 2
    os.environ.setdefault("ARGILLA_SEARCH_ENGINE", "sqlsearch")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, HERE)
    started = time.monotonic()
    serve_options = {"host": args.host, "port": args.port, "access_log": True, "timeout_keep_alive": 30,
                     "timeout_graceful_shutdown": 10}
    if args.serve_only:
        import uvicorn

        uvicorn.run("argilla_app:app", workers=args.workers, **serve_options)
        return 0

    import argilla_sqlsearch.engine  # noqa: F401  (registers the engine in this process)

    migrate()
    install_indexes()
    prepare_sqlite()
    asyncio.run(
        ensure_owner_and_workspace(
            os.environ["RLHF_LABEL_OWNER_USERNAME"],
            os.environ["RLHF_LABEL_OWNER_PASSWORD"],
            os.environ["RLHF_LABEL_OWNER_API_KEY"],
            os.environ["RLHF_LABEL_WORKSPACE"],
        )
    )
    from argilla_server.database import async_engine

    asyncio.run(async_engine.dispose())  # its pool belongs to the loop above; uvicorn runs its own
    _log(f"prepared in {time.monotonic() - started:.1f}s; serving on http://{args.host}:{args.port} "
         f"with {args.workers} worker(s)")
    if args.workers > 1:
        sys.stdout.flush()
        argv = [sys.executable, os.path.abspath(__file__), "--serve-only", "--host", args.host,
                "--port", str(args.port), "--workers", str(args.workers)]
        os.execv(sys.executable, argv)

    import uvicorn
    from argilla_server import app
    from tuning import tune_process

    tune_process()
    uvicorn.run(app, **serve_options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
