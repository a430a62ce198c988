"""The labeling side of the pipeline: the embedded Argilla service and clients for any Argilla.

Service (``rlhf label serve``): ``start_service``, ``stop_service``, ``service_status`` run argilla-server
2.8 from its own venv with the project's SQL search engine (the repository's ``argilla_server_plugin/``, the
server side), Redis and the rq worker, on loopback. Clients: ``resolve_connection`` picks the Argilla to talk to (an external one from config or
``ARGILLA_API_URL``/``ARGILLA_API_KEY``, else the running embedded service with its owner key);
``http_client`` and ``sdk_client`` give raw-API and SDK clients for it. Accounts: ``create_user``,
``user_api_key``, ``ensure_workspace`` and friends. Datasets and responses: ``load_template``,
``create_dataset``, ``log_records``, ``submit_response`` (safe against the duplicate-submit race),
``iter_records`` and ``ranking_of`` (exact ranks, read from the raw API).

The names below are imported on first use (``from rlhf.labeling import ArgillaHTTP`` loads only the modules
that name needs), so importing a light module such as :mod:`rlhf.labeling.config` does not load the HTTP
client and ``rlhf --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf.utils.lazy import lazy_attributes

if TYPE_CHECKING:
    from rlhf.labeling.config import ArgillaConfig, LabelingConfig, ServiceConfig
    from rlhf.labeling.connection import Connection, http_client, resolve_connection, sdk_client
    from rlhf.labeling.http import ArgillaAPIError, ArgillaHTTP
    from rlhf.labeling.responses import (
        SubmitResult,
        iter_records,
        pending_queue,
        ranking_of,
        ranking_value,
        submit_response,
        submit_responses,
    )
    from rlhf.labeling.service import ServiceStatus, service_status, start_service, stop_service
    from rlhf.labeling.templates import (
        DatasetTemplate,
        create_dataset,
        find_dataset,
        load_template,
        log_records,
        question_ids,
    )
    from rlhf.labeling.users import (
        NewUser,
        User,
        Workspace,
        add_to_workspace,
        create_user,
        delete_user,
        ensure_workspace,
        find_user,
        list_users,
        list_workspaces,
        user_api_key,
    )

_MODULES: dict[str, tuple[str, ...]] = {
    "config": ("ArgillaConfig", "LabelingConfig", "ServiceConfig"),
    "connection": ("Connection", "http_client", "resolve_connection", "sdk_client"),
    "http": ("ArgillaAPIError", "ArgillaHTTP"),
    "responses": ("SubmitResult", "iter_records", "pending_queue", "ranking_of", "ranking_value", "submit_response",
                  "submit_responses"),
    "service": ("ServiceStatus", "service_status", "start_service", "stop_service"),
    "templates": ("DatasetTemplate", "create_dataset", "find_dataset", "load_template", "log_records", "question_ids"),
    "users": ("NewUser", "User", "Workspace", "add_to_workspace", "create_user", "delete_user", "ensure_workspace",
              "find_user", "list_users", "list_workspaces", "user_api_key"),
}
__getattr__, __dir__ = lazy_attributes(globals(), _MODULES)


__all__ = [
    "ArgillaAPIError",
    "ArgillaConfig",
    "ArgillaHTTP",
    "Connection",
    "DatasetTemplate",
    "LabelingConfig",
    "NewUser",
    "ServiceConfig",
    "ServiceStatus",
    "SubmitResult",
    "User",
    "Workspace",
    "add_to_workspace",
    "create_dataset",
    "create_user",
    "delete_user",
    "ensure_workspace",
    "find_dataset",
    "find_user",
    "http_client",
    "iter_records",
    "list_users",
    "list_workspaces",
    "load_template",
    "log_records",
    "pending_queue",
    "question_ids",
    "ranking_of",
    "ranking_value",
    "resolve_connection",
    "sdk_client",
    "service_status",
    "start_service",
    "stop_service",
    "submit_response",
    "submit_responses",
    "user_api_key",
]
