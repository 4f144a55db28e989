"""deploy/k8s/ (README "Scaling out"): every kustomization renders, every object is valid against the Kubernetes
schemas (offline: kubernetes-validate ships them), and the manifests keep the promises the README makes: probe
paths and ports, the profile's settings and resources, the logins as a file from a Secret, non-root with a
read-only root filesystem, the drain inside the grace period, one model download for all replicas, and the
sharded Job's contract with `wenmo embed --shard`."""

from __future__ import annotations

import re
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml
from k8s_manifests import (
    DOCKERFILE,
    K8S,
    KUBECTL,
    KUSTOMIZATIONS,
    NO_KUBECTL,
    ROOT,
    config_data,
    container,
    env_file,
    one,
    render,
)

from app.config import Settings
from app.errors import ConfigError

pytestmark = pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)
OVERLAYS = ("overlays/cpu", "overlays/gpu")
# The oldest Kubernetes the manifests need (the Job's backoffLimitPerIndex is on by default from 1.29), and the
# newest schema kubernetes-validate has.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schema(kustomization: str, version: str) -> None:
    objects = render(kustomization)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises on any unknown or ill-typed field


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_join_job_is_valid_and_runs_the_join_command(version: str) -> None:
    job = yaml.safe_load((K8S / "jobs" / "embed-shards" / "join.yaml").read_text(encoding="utf-8"))
    kubernetes_validate.validate(job, version, strict=True)
    command = " ".join(pod_spec(job)["spec"]["containers"][0]["command"])
    assert command.endswith("exec /opt/wenmo/venv/bin/wenmo join-shards --output /data/out/vectors.npy "
                            "/data/out/vectors.shard-*.npy")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_selectors_agree(overlay: str) -> None:
    objects = render(overlay)
    deployment, service = one(objects, "Deployment"), one(objects, "Service")
    pod = pod_spec(deployment)
    app = container(pod, "wenmo")
    port = int(config_data(objects)["WENMO_PORT"])
    assert app["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    probes = {kind: (app[kind]["httpGet"]["path"], app[kind]["httpGet"]["port"])
              for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": ("/readyz", "http"), "readinessProbe": ("/readyz", "http"),
                      "livenessProbe": ("/healthz", "http")}
    # Model loading may take as long as the launcher allows a start (its --startup-timeout-s, 600 s) and more.
    startup = app["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels == service["spec"]["selector"]
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == labels
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == labels and policy["policyTypes"] == ["Ingress"]
    assert policy["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]  # the app's port, nothing else


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gradio_sessions_stay_on_one_replica(overlay: str) -> None:
    service = one(render(overlay), "Service")["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    assert service["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] >= 3600  # a working session, at least


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_pre_stop_pause_and_the_drain(overlay: str) -> None:
    objects = render(overlay)
    pod = pod_spec(one(objects, "Deployment"))
    pause = container(pod, "wenmo")["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    drain = float(config_data(objects)["WENMO_DRAIN_S"])
    # deploy.sh gives systemd drain + 31 s; here the pre-stop pause comes first.
    assert pod["spec"]["terminationGracePeriodSeconds"] >= int(pause[1]) + drain + 31


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_logins_are_a_file_from_the_secret_never_an_environment_variable(overlay: str) -> None:
    objects = render(overlay)
    pod = pod_spec(one(objects, "Deployment"))["spec"]
    app = container({"spec": pod}, "wenmo")
    auth_file = next(e["value"] for e in app["env"] if e["name"] == "WENMO_AUTH_FILE")
    volume = next(v for v in pod["volumes"] if "secret" in v)
    assert volume["secret"]["secretName"] == "wenmo-auth"
    mount = next(m for m in app["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    assert auth_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert volume["secret"]["items"][0]["key"] == "auth"
    everything = [*pod["containers"], *pod["initContainers"]]
    names = {e["name"] for c in everything for e in c.get("env", [])} | set(config_data(objects))
    assert "WENMO_AUTH" not in names
    assert not [e for c in everything for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert not [o for o in objects if o["kind"] == "Secret"]  # no default password shipped: you create it


def test_service_links_would_break_the_port_setting() -> None:
    """Why enableServiceLinks is off: a Service named wenmo makes Kubernetes set WENMO_PORT=tcp://…:7860."""
    with pytest.raises(ConfigError, match="WENMO_PORT='tcp://10.0.0.1:7860' is not an integer"):
        Settings.from_env({"WENMO_PORT": "tcp://10.0.0.1:7860"})
    for kustomization in KUSTOMIZATIONS:
        for obj in render(kustomization):
            if obj["kind"] in ("Deployment", "Job"):
                assert pod_spec(obj)["spec"]["enableServiceLinks"] is False, kustomization


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_container_runs_non_root_without_privileges_on_a_read_only_root(kustomization: str) -> None:
    user = int(re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(encoding="utf-8"), re.M).group(1))
    for obj in render(kustomization):
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        pod = pod_spec(obj)["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == user != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in [*pod["containers"], *pod.get("initContainers", [])]:
            assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "privileged": False, "capabilities": {"drop": ["ALL"]}}, c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_share_one_model_volume_that_only_the_download_step_writes(overlay: str) -> None:
    objects = render(overlay)
    pod = pod_spec(one(objects, "Deployment"))["spec"]
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    model_dir = config_data(objects)["WENMO_MODEL_DIR"]
    download = container({"spec": pod}, "download-models", init=True)
    assert download["command"] == ["/opt/wenmo/venv/bin/wenmo", "download"]
    mounts = {c["name"]: next(m for m in c["volumeMounts"] if m["name"] == volume["name"])
              for c in (download, container({"spec": pod}, "wenmo"))}
    assert mounts["download-models"] == {"name": volume["name"], "mountPath": model_dir}
    assert mounts["wenmo"] == {"name": volume["name"], "mountPath": model_dir, "readOnly": True}


def profile_output(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "app", "profile", *args], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_overlays_profiles_are_what_wenmo_profile_prints() -> None:
    assert (K8S / "overlays" / "cpu" / "profile.env").read_text(encoding="utf-8") == profile_output("--cpu")
    gpu = (K8S / "overlays" / "gpu" / "profile.env").read_text(encoding="utf-8")
    found = re.search(r"; found (.+), (\d+) MiB, compute capability (\d+\.\d+)$", gpu.splitlines()[0])
    assert gpu == profile_output("--gpu", f"{found[1]}, {found[2]}, {found[3]}")
    assert config_data(render("overlays/gpu"))["WENMO_LAUNCHER_THRESHOLD_MIB"] == str(int(found[2]) * 85 // 100)


def test_cpu_overlay_resources_threads_and_memory_watchdog() -> None:
    objects = render("overlays/cpu")
    resources = container(pod_spec(one(objects, "Deployment")), "wenmo")["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "4", "memory": "8Gi"}  # Guaranteed QoS
    settings = config_data(objects)
    assert settings["OMP_NUM_THREADS"] == resources["limits"]["cpu"]  # torch's threads = the CPUs it may use
    assert settings["WENMO_DEVICE"] == "cpu" and "nvidia.com/gpu" not in str(objects)
    # The RSS ratio is of the container's limit (launcher/probes.py: cgroup_memory_limit), so 80 % of 8 GiB.
    assert settings["WENMO_LAUNCHER_THRESHOLD_RATIO"] == "0.80" and "WENMO_LAUNCHER_THRESHOLD_MIB" not in settings


def test_gpu_overlay_asks_for_one_gpu_per_replica_and_never_a_spare_for_updates() -> None:
    objects = render("overlays/gpu")
    deployment = one(objects, "Deployment")
    resources = container(pod_spec(deployment), "wenmo")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["memory"] == "8Gi"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert config_data(objects)["WENMO_DEVICE"] == "cuda"
    assert container(pod_spec(deployment), "wenmo")["image"] == "wenmo:cuda"
    assert container(pod_spec(one(render("overlays/cpu"), "Deployment")), "wenmo")["image"] == "wenmo:cpu"


def test_the_autoscaler_reads_the_queue_depth_the_server_reports() -> None:
    hpa = one(render("overlays/gpu"), "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "wenmo"}
    assert [m["pods"]["metric"]["name"] for m in hpa["metrics"]] == ["wenmo_queue_depth"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    rules = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text(encoding="utf-8"))
    served = {r["name"]["as"]: r["seriesQuery"] for r in rules["rules"]["custom"]}
    assert served["wenmo_queue_depth"].startswith("wenmo_queue_depth{")
    # The series exists on a real server: tests/deploy/test_container.py scrapes it from the image's command.


def test_the_sharded_job_runs_one_shard_per_index_on_one_gpu_each() -> None:
    objects = render("jobs/embed-shards")
    job = one(objects, "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"]
    pod = pod_spec(job)
    embed = container(pod, "embed")
    command = " ".join(embed["command"])
    shards = spec["completions"]
    assert command == ("/bin/sh -c exec /opt/wenmo/venv/bin/wenmo embed --input /data/in/texts.txt --output "
                       f'/data/out/vectors.npy --format npy --shard "$JOB_COMPLETION_INDEX/{shards}"')
    assert embed["resources"]["limits"]["nvidia.com/gpu"] == 1
    mounts = {m["mountPath"]: m for m in embed["volumeMounts"]}
    assert mounts["/data/in"]["readOnly"] is True and "readOnly" not in mounts["/data/out"]
    assert mounts["/models"]["readOnly"] is True
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    server = one(render("overlays/gpu"), "PersistentVolumeClaim")["metadata"]["name"]
    assert claims["models"] == server  # the server's model cache: downloaded once for both
    settings = config_data(objects)
    assert settings["WENMO_MODEL_DIR"] == config_data(render("overlays/gpu"))["WENMO_MODEL_DIR"]
    gpu_profile = env_file(K8S / "overlays" / "gpu" / "profile.env")
    for key in ("WENMO_DEVICE", "WENMO_MAX_BATCH_TOKENS", "WENMO_MAX_BATCH_SIZE", "WENMO_MAX_LENGTH"):
        assert settings[key] == gpu_profile[key], key
