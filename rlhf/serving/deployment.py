"""The chat API as a Ray Serve application: one deployment whose replicas each load the model, open the shared
feedback store and build the FastAPI app of :mod:`rlhf.serving.api` (``serve.ingress`` with
``__serve_build_asgi_app__``); replicas, autoscaling and resources come from the deployment settings, so the same
app runs on a laptop's local Ray and on a cluster.
"""

from __future__ import annotations

from typing import Any

from ray import serve

from rlhf.serving.settings import (
    AuthSettings,
    DeploymentSettings,
    GuardSettings,
    HTTPSettings,
    LimitSettings,
    ServedModel,
    SignalSettings,
    StoreSettings,
)
from rlhf.utils.callables import load_callable

__all__ = ["APP_NAME", "ChatDeployment", "build_app", "start", "stop"]

APP_NAME = "rlhf-chat"


@serve.ingress()
class ChatDeployment:
    """One replica: model, store, guardrails and the FastAPI app over them."""

    def __init__(self, sections: dict[str, Any]) -> None:
        import torch

        from rlhf.serving.api import ChatService
        from rlhf.serving.chat import ChatEngine
        from rlhf.serving.store import FeedbackStore

        deployment = DeploymentSettings.model_validate(sections["deployment"])
        if deployment.torch_threads:
            torch.set_num_threads(deployment.torch_threads)
        model = ServedModel.model_validate(sections["model"])
        store = StoreSettings.model_validate(sections["store"])
        signals = SignalSettings.model_validate(sections["signals"])
        device = "cuda" if deployment.num_gpus > 0 else "cpu"
        self.service = ChatService(
            model=model, limits=LimitSettings.model_validate(sections["limits"]),
            auth=AuthSettings.model_validate(sections["auth"]), store=FeedbackStore(store.url, store.scrubber),
            guards=GuardSettings.model_validate(sections["guards"]), signals=signals,
            engine=ChatEngine.load(model.path, dtype=model.dtype, device=device),
            categorize=load_callable(signals.categorizer))

    def __serve_build_asgi_app__(self):
        from rlhf.serving.api import build_api

        return build_api(self.service)


def build_app(sections: dict[str, Any]):
    """The bound application: ``sections`` holds the model, deployment, limits, auth, store, guards and signals
    settings as plain dicts (what crosses into the replicas)."""
    dep = DeploymentSettings.model_validate(sections["deployment"])
    options: dict[str, Any] = {
        "name": "chat", "max_ongoing_requests": dep.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": dep.num_cpus, "num_gpus": dep.num_gpus}}
    if dep.autoscaling:
        options["autoscaling_config"] = {"min_replicas": dep.min_replicas, "max_replicas": dep.max_replicas,
                                         "target_ongoing_requests": dep.target_ongoing_requests}
    else:
        options["num_replicas"] = dep.num_replicas
    return serve.deployment(**options)(ChatDeployment).bind(sections)


def start(sections: dict[str, Any], http: HTTPSettings) -> str:
    """Deploy the app on the connected Ray cluster (blocking until the replicas are up); returns the base URL."""
    serve.start(http_options={"host": http.host, "port": http.port})
    serve.run(build_app(sections), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::") else http.host
    return f"http://{host}:{http.port}"


def stop() -> None:
    """Remove the app; shut Serve down too when no other application runs on the cluster."""
    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()
