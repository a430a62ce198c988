"""The KubeRay manifests (``jobs/kuberay/``): accepted by KubeRay's CRDs, runnable by Ray, sized for their config.

No Kubernetes is needed. Each manifest is checked the way the API server would check it, against the
``openAPIV3Schema`` of the vendored CRD (``tests/data/kuberay/``, release and commit in its README):
JSON-schema validation (types, enums, patterns, required fields), plus strict field validation, which
a structural schema cannot express (it has no ``additionalProperties: false``): a field the schema
does not declare is pruned or, with ``kubectl``'s default ``--validate=strict``, rejected. The rest is what
no schema knows: the entrypoint's config exists and loads with the project's loader, the workers' GPUs are
exactly what the config's roles reserve (none idle, none missing) and the roles' bundles fit on the nodes,
the job environment lets the stage's own ``ray.init`` through, and the image, Ray and vLLM versions agree
with the Dockerfile, ``constraints.txt`` and README.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import jsonschema  # a requirement of ray
import pytest
import yaml

from rlhf.cli.submit_cmd import EXCLUDES, STAGE_COMMANDS
from rlhf.core.cluster import WORKER_ENV_VARS
from rlhf.roles.launcher import ROLES, plan_bundles
from rlhf.stages import load_config

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "tests" / "data" / "kuberay"
MANIFESTS = sorted((REPO / "jobs" / "kuberay").glob("*.yaml"))
IMAGE_ROOT = "/app"  # where docker/Dockerfile puts the repository
SIZED_FOR = "rlhf-pipeline/sized-for"  # a RayCluster's annotation naming the config it is sized for
# What a manifest may set in the top-level metadata (ObjectMeta; the API server checks it, not the CRD).
OBJECT_META = {"name", "generateName", "namespace", "labels", "annotations", "finalizers", "ownerReferences"}
GPU = "nvidia.com/gpu"


def read_yaml(path: Path):
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-2 MB: libyaml reads them in 0.3 s
    return yaml.load(path.read_text(), Loader=loader)


def manifest_id(path: Path) -> str:
    return path.name


@cache
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of the vendored CRDs."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = read_yaml(path)
        for version in crd["spec"]["versions"]:
            if version["served"]:
                key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                out[key] = version["schema"]["openAPIV3Schema"]
    return out


def schema_of(manifest: dict) -> dict:
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    assert key in crd_schemas(), f"no vendored CRD serves {key}; have {sorted(crd_schemas())}"
    return crd_schemas()[key]


def schema_errors(manifest: dict) -> list[str]:
    """JSON-schema violations, as 'path: message' (Kubernetes' schemas are draft 4 with extensions)."""
    validator = jsonschema.Draft4Validator(schema_of(manifest))
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(manifest))


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Paths of fields the structural ``schema`` does not declare: what the API server prunes, or rejects
    under strict field validation. Maps (``additionalProperties``) take any key; below
    ``x-kubernetes-preserve-unknown-fields`` only declared properties are checked."""
    found: list[str] = []
    preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if props is not None and key in props:
                found += unknown_fields(item, props[key], where)
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, where)
            elif not (preserve or extra is True):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def strict_field_errors(manifest: dict) -> list[str]:
    """Undeclared fields of the whole manifest; the top-level metadata is checked against ObjectMeta."""
    body = {k: v for k, v in manifest.items() if k != "metadata"}
    found = unknown_fields(body, schema_of(manifest))
    found += [f"metadata.{key}" for key in manifest.get("metadata", {}) if key not in OBJECT_META]
    return found


# ---------------------------------------------------------------- what the manifests run


def cluster_spec(manifest: dict) -> dict:
    return manifest["spec"]["rayClusterSpec"] if manifest["kind"] == "RayJob" else manifest["spec"]


def containers(manifest: dict) -> list[dict]:
    spec = cluster_spec(manifest)
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def entrypoint_command(manifest: dict) -> tuple[list[str], str, list[str]]:
    """(rlhf command, config path in the repository, overrides) of a RayJob's entrypoint."""
    args = shlex.split(manifest["spec"]["entrypoint"])
    assert args[:3] == ["python", "-m", "rlhf.cli"], f"entrypoint is not an rlhf command: {args}"
    for command in STAGE_COMMANDS.values():
        if args[3:3 + len(command)] == command:
            config, overrides = args[3 + len(command)], args[4 + len(command):]
            assert config.startswith(f"{IMAGE_ROOT}/"), f"config {config} is not in the image's {IMAGE_ROOT}"
            return command, config.removeprefix(f"{IMAGE_ROOT}/"), overrides
    raise AssertionError(f"entrypoint runs no stage command: {args}")


def run_config(manifest: dict):
    """The stage config a manifest runs: a RayJob's entrypoint, or the config a RayCluster is sized for."""
    if manifest["kind"] == "RayJob":
        _, config, overrides = entrypoint_command(manifest)
    else:
        config, overrides = manifest["metadata"]["annotations"][SIZED_FOR], []
    assert (REPO / config).is_file(), f"{config} does not exist in the repository"
    return load_config(REPO / config, overrides)


def quantity(value) -> float:
    """A Kubernetes CPU or count quantity ('8', 8, '500m') as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def ray_nodes(manifest: dict) -> list[dict[str, float]]:
    """The Ray resources of every node, as KubeRay starts them: ``num-cpus`` and ``num-gpus`` from
    rayStartParams, else from the Ray container's limits (CPU: then requests), rounded up."""
    spec = cluster_spec(manifest)
    nodes = []
    for group, count in [(spec["headGroupSpec"], 1),
                         *[(g, g["replicas"]) for g in spec.get("workerGroupSpecs", [])]]:
        assert "resources" not in group, "a group-level 'resources' override is not modelled here"
        params = group.get("rayStartParams", {})
        res = group["template"]["spec"]["containers"][0].get("resources", {})
        limits, requests = res.get("limits", {}), res.get("requests", {})
        cpus = params.get("num-cpus", limits.get("cpu", requests.get("cpu", 0)))
        gpus = params.get("num-gpus", limits.get(GPU, 0))
        nodes += [{"CPU": math.ceil(quantity(cpus)), "GPU": math.ceil(quantity(gpus))} for _ in range(count)]
    return nodes


def pack(bundles: list[dict[str, float]], nodes: list[dict[str, float]], strategy: str) -> bool:
    """Whether the placement group's bundles fit on the nodes (first fit, largest bundles first)."""
    if strategy == "STRICT_PACK":
        total = {k: sum(b.get(k, 0.0) for b in bundles) for k in ("CPU", "GPU")}
        return any(all(total[k] <= n[k] + 1e-9 for k in total) for n in nodes)
    free = [dict(n) for n in nodes]
    used: set[int] = set()
    for bundle in sorted(bundles, key=lambda b: (b.get("GPU", 0.0), b.get("CPU", 0.0)), reverse=True):
        for i, node in enumerate(free):
            if strategy == "STRICT_SPREAD" and i in used:
                continue
            if all(bundle.get(k, 0.0) <= node[k] + 1e-9 for k in ("CPU", "GPU")):
                for k in ("CPU", "GPU"):
                    node[k] -= bundle.get(k, 0.0)
                used.add(i)
                break
        else:
            return False
    return True


def role_bundles(cfg) -> list[dict[str, float]]:
    """The placement group the stage reserves (the roles rlhf.roles.group.start_roles starts)."""
    roles = tuple(r for r in ROLES if r != "critic" or cfg.uses_critic)
    bundles, _ = plan_bundles(cfg.resources, roles)
    return bundles


# ---------------------------------------------------------------- the CRDs


def test_vendored_crds_are_the_named_release():
    readme = (CRD_DIR / "README.md").read_text()
    for path in sorted(CRD_DIR.glob("*.yaml")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {path.name}" in readme, f"{path.name} differs from the release its README names"
    assert {kind for _, kind in crd_schemas()} == {"RayJob", "RayCluster"}


def test_manifests_exist():
    assert {p.name for p in MANIFESTS} >= {"rayjob-ppo.yaml", "rayjob-ppo-gpu.yaml", "raycluster.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=manifest_id)
def test_manifest_is_valid_for_the_crd(path):
    manifest = read_yaml(path)
    errors = schema_errors(manifest)
    assert not errors, f"{path.name} breaks the CRD's schema: {errors}"
    unknown = strict_field_errors(manifest)
    assert not unknown, f"{path.name} sets fields the CRD does not declare (strict validation rejects them): {unknown}"


def test_a_misspelled_field_is_rejected():
    manifest = read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo-gpu.yaml")
    spec = manifest["spec"]
    spec["shutdownAfterJobFinish"] = spec.pop("shutdownAfterJobFinishes")
    worker = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    resources = worker["template"]["spec"]["containers"][0]["resources"]
    resources["limit"] = resources.pop("limits")
    container = worker["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    manifest["metadata"]["label"] = {"team": "rl"}
    # JSON schema alone accepts all four: a structural schema declares no additionalProperties: false.
    assert schema_errors(manifest) == []
    assert strict_field_errors(manifest) == [
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].resources.limit",
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].volumeMount",
        "spec.shutdownAfterJobFinish",
        "metadata.label",
    ]


def test_a_wrong_value_is_rejected():
    manifest = read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo-gpu.yaml")
    worker = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    worker["replicas"] = "two"
    worker["template"]["spec"]["containers"][0]["resources"]["limits"][GPU] = "8 GPUs"
    del worker["groupName"]
    errors = schema_errors(manifest)
    assert any(e.startswith("spec.rayClusterSpec.workerGroupSpecs.0.replicas: 'two' is not of type")
               for e in errors), errors
    assert any(e.startswith(f"spec.rayClusterSpec.workerGroupSpecs.0.template.spec.containers.0.resources.limits."
                            f"{GPU}: '8 GPUs' does not match") for e in errors), errors
    assert "spec.rayClusterSpec.workerGroupSpecs.0: 'groupName' is a required property" in errors


def test_unknown_fields_follow_structural_schema_rules():
    schema = {"type": "object", "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
        "pruned": {"type": "object"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    }}
    value = {"labels": {"any-key": "x"}, "free": {"anything": 1, "known": {"a": "x", "b": "y"}},
             "pruned": {"x": 1}, "items": [{"name": "a"}, {"nmae": "b"}], "extra": 1}
    assert unknown_fields(value, schema) == ["free.known.b", "pruned.x", "items[1].nmae", "extra"]


# ---------------------------------------------------------------- what they run


@pytest.mark.parametrize("path", [p for p in MANIFESTS if read_yaml(p)["kind"] == "RayJob"], ids=manifest_id)
def test_entrypoint_runs_a_shipped_config(path):
    command, config, overrides = entrypoint_command(read_yaml(path))
    assert (REPO / config).is_file(), f"{path.name} runs {config}, which is not in the repository"
    cfg = load_config(REPO / config, overrides)
    assert cfg.stage == command[-1]
    assert cfg.run.root == "/shared/runs"  # the volume every pod mounts


@pytest.mark.parametrize("path", MANIFESTS, ids=manifest_id)
def test_workers_hold_what_the_roles_reserve(path):
    manifest = read_yaml(path)
    cfg = run_config(manifest)
    bundles, nodes = role_bundles(cfg), ray_nodes(manifest)
    asked = sum(b.get("GPU", 0.0) for b in bundles)
    held = sum(n["GPU"] for n in nodes)
    assert asked == held, f"the roles reserve {asked:g} GPUs, the nodes have {held:g} (none may sit idle)"
    assert pack(bundles, nodes, cfg.resources.strategy), f"bundles {bundles} do not fit on nodes {nodes}"
    for container in containers(manifest):
        res = container.get("resources", {})
        # Extended resources are not overcommitted: a GPU request must equal its limit.
        assert res.get("requests", {}).get(GPU, res.get("limits", {}).get(GPU)) == res.get("limits", {}).get(GPU)


def test_gpu_variant_runs_every_model_role_on_gpus():
    cfg = run_config(read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo-gpu.yaml"))
    assert cfg.rollout.engine == "vllm" and cfg.uses_critic
    for role in ("rollout", "policy", "critic", "reference"):
        assert getattr(cfg.resources, role).num_gpus > 0, role


def test_resource_check_catches_idle_and_missing_gpus():
    manifest = read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo-gpu.yaml")
    bundles, nodes = role_bundles(run_config(manifest)), ray_nodes(manifest)
    assert len(bundles) == 16 and pack(bundles, nodes, "PACK")
    assert not pack(bundles, nodes, "STRICT_PACK")  # no single node holds 16 GPUs
    # The measured fault: the demo config, whose roles reserve no GPU, on these 16-GPU workers.
    demo = load_config(REPO / "configs" / "ppo" / "demo.yaml")
    assert sum(b.get("GPU", 0.0) for b in role_bundles(demo)) == 0 < sum(n["GPU"] for n in nodes) == 16
    # One worker fewer: half the bundles have nowhere to go.
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = 1
    assert not pack(bundles, ray_nodes(manifest), "PACK")


# ---------------------------------------------------------------- the job environment


def job_runtime_env(manifest: dict) -> dict:
    return yaml.safe_load(manifest["spec"]["runtimeEnvYAML"])


def driver_env(runtime_env: dict) -> dict[str, str]:
    """The environment Ray's job supervisor gives the entrypoint: the job's env_vars, and its runtime env as
    the job config ray.init merges with its own (ray.dashboard.modules.job.job_supervisor)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_OVERRIDE_JOB_RUNTIME_ENV")}
    env.update(runtime_env.get("env_vars", {}))
    env[RAY_JOB_CONFIG_JSON_ENV_VAR] = json.dumps({"runtime_env": runtime_env, "metadata": {}})
    return env


# The stage's bootstrap (rlhf.core.cluster.connect_ray); it starts a local Ray, as a job would join its own.
CONNECT = ("import json, ray; from rlhf.core.cluster import connect_ray; connect_ray(None, 1, 80); "
           "print(json.dumps(ray.get_runtime_context().runtime_env['env_vars'])); ray.shutdown()")


def run_driver(runtime_env: dict) -> subprocess.CompletedProcess:
    """Run the stage's Ray bootstrap as a job's entrypoint would run, under ``runtime_env``."""
    return subprocess.run([sys.executable, "-c", CONNECT], env=driver_env(runtime_env), capture_output=True,
                          text=True, timeout=180, check=False)


@pytest.mark.parametrize("path", [p for p in MANIFESTS if read_yaml(p)["kind"] == "RayJob"], ids=manifest_id)
def test_job_env_is_the_ray_submit_env(path):
    env_vars = job_runtime_env(read_yaml(path))["env_vars"]
    assert env_vars == read_yaml(REPO / "jobs" / "ray" / "runtime_env.yaml")["env_vars"]
    if set(env_vars) & set(WORKER_ENV_VARS):  # the stage's ray.init sets these again
        assert env_vars.get("RAY_OVERRIDE_JOB_RUNTIME_ENV") == "1"


def test_job_env_without_the_override_fails_the_stage_ray_init():
    runtime_env = job_runtime_env(read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo.yaml"))
    runtime_env["env_vars"].pop("RAY_OVERRIDE_JOB_RUNTIME_ENV", None)
    proc = run_driver(runtime_env)
    assert proc.returncode != 0
    assert "Failed to merge the Job's runtime env" in proc.stderr


@pytest.mark.slow
def test_job_env_lets_the_stage_ray_init_through_a_ray_job_server():
    """What KubeRay's submitter does (``ray job submit --runtime-env-json``), against a real job server."""
    from ray.cluster_utils import Cluster
    from ray.job_submission import JobStatus, JobSubmissionClient

    from rlhf.utils.distributed import free_port

    runtime_env = job_runtime_env(read_yaml(REPO / "jobs" / "kuberay" / "rayjob-ppo.yaml"))
    without = {"env_vars": {k: v for k, v in runtime_env["env_vars"].items() if k != "RAY_OVERRIDE_JOB_RUNTIME_ENV"}}
    port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_port": port, "dashboard_host": "127.0.0.1",
        "dashboard_agent_listen_port": free_port(), "object_store_memory": 200 * 1024 * 1024})
    try:
        client = JobSubmissionClient(f"http://127.0.0.1:{port}")
        entrypoint = shlex.join([sys.executable, "-c", CONNECT])
        results = {}
        for name, env in [("manifest", runtime_env), ("without", without)]:
            job = None
            for _ in range(45):  # a fresh head's job agent takes a few seconds to come up
                try:
                    job = client.submit_job(entrypoint=entrypoint, runtime_env=env)
                    break
                except RuntimeError:
                    time.sleep(2)
            assert job is not None, "the job server never accepted the job"
            while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
                time.sleep(1)
            results[name] = (client.get_job_status(job), client.get_job_logs(job))
    finally:
        cluster.shutdown()
    status, logs = results["manifest"]
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    inherited = json.loads(logs.strip().splitlines()[-1])  # what every actor of the stage gets
    assert runtime_env["env_vars"].items() <= inherited.items()
    status, logs = results["without"]
    assert status == JobStatus.FAILED and "Failed to merge the Job's runtime env" in logs


# ---------------------------------------------------------------- image and versions


def dockerfile() -> str:
    return (REPO / "docker" / "Dockerfile").read_text()


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", dockerfile(), re.MULTILINE)
    assert match, f"docker/Dockerfile sets no ARG {name}"
    return match.group(1)


def test_manifests_use_the_documented_image():
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    build = re.compile(r"docker build -f docker/Dockerfile -t (\S+) \.")
    docs = (REPO / "docs" / "kuberay.md").read_text()
    documented = {build.search(dockerfile()).group(1), build.search(docs).group(1)}
    assert documented == {f"registry.example.com/rlhf-pipeline:{version}"}
    images = {c["image"] for p in MANIFESTS for c in containers(read_yaml(p))}
    assert images == documented


def test_ray_and_vllm_versions_agree():
    pinned = re.search(r"^ray==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE).group(1)
    assert {cluster_spec(read_yaml(p))["rayVersion"] for p in MANIFESTS} == {pinned}
    assert dockerfile_arg("RAY_VERSION") == pinned
    readme_vllm = re.search(r"pip install vllm==(\S+?) ", (REPO / "README.md").read_text()).group(1)
    assert dockerfile_arg("VLLM_VERSION") == readme_vllm


def test_dockerfile_installs_vllm_before_the_project():
    runs = [line for line in dockerfile().splitlines() if "pip install" in line]
    vllm = next(i for i, line in enumerate(runs) if '"vllm==${VLLM_VERSION}"' in line)
    project = next(i for i, line in enumerate(runs) if f'"{IMAGE_ROOT}[vllm]"' in line)
    assert vllm < project
    assert not any("constraints.txt" in line for line in runs)  # vLLM's torch pin does not fit the lock
    assert re.search(rf"^COPY \. {IMAGE_ROOT}$", dockerfile(), re.MULTILINE)  # where the entrypoints read configs


def test_docker_context_leaves_out_what_submit_leaves_out():
    ignored = {line.strip() for line in (REPO / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert set(EXCLUDES) <= ignored
