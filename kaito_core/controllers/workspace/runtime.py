"""Every string the pods share with the in-pod runtimes (kaito_presets.runtime), in one place.

Command lines, environment variable names, mount paths, ports and ConfigMap keys
must match what the runtimes read (see ``presets/kaito_presets/runtime``); keep
them here so aligning the two is one file's work.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ADAPTERS_DIR",
    "ADAPTER_STRENGTHS_ENV",
    "API_KEY_ENV",
    "CONFIG_DIR",
    "DATA_DIR",
    "DOWNLOAD_MODULE",
    "INFERENCE_CONFIG_KEY",
    "INFERENCE_CONFIG_PATH",
    "INFERENCE_MODULE",
    "INFERENCE_PORT",
    "MODEL_DIR",
    "OCI_MODULE",
    "PULL_SECRET_DIR",
    "PUSH_SECRET_DIR",
    "RESULTS_DIR",
    "SHM_DIR",
    "TORCH_PORT",
    "TUNING_COMPLETION_MARKER",
    "TUNING_CONFIG_KEY",
    "TUNING_CONFIG_PATH",
    "TUNING_FAILURE_MARKER",
    "TUNING_MODULE",
    "WEIGHTS_MODULE",
    "adapter_pull_command",
    "download_command",
    "image_data_copy_command",
    "inference_command",
    "push_command",
    "tuning_command",
    "weights_pull_command",
]

PYTHON: Final = "python"
INFERENCE_MODULE: Final = "kaito_presets.runtime.inference"
TUNING_MODULE: Final = "kaito_presets.runtime.tuning"
DOWNLOAD_MODULE: Final = "kaito_presets.runtime.download"
OCI_MODULE: Final = "kaito_presets.runtime.oci"
WEIGHTS_MODULE: Final = "kaito_presets.runtime.weights"

#: The inference server's port (InferenceConfig.port default) and the torch rendezvous port.
INFERENCE_PORT: Final = 5000
TORCH_PORT: Final = 29500
HEALTH_PATH: Final = "/health"

#: The model weights: a volume the weights init container fills (or the user's claim), mounted here.
MODEL_DIR: Final = "/workspace/weights"
#: Registry credentials for a private weights artifact (the first of presetOptions.imagePullSecrets).
WEIGHTS_SECRET_DIR: Final = "/mnt/weights-pull-secret"
#: JSON {registry host: host to use}: the runtimes' pull/push tools apply it to every reference.
REGISTRY_MIRRORS_ENV: Final = "KAITO_REGISTRY_MIRRORS"
#: Comma-separated registry hosts the pull/push tools speak plain HTTP to (an in-cluster registry).
INSECURE_REGISTRIES_ENV: Final = "KAITO_INSECURE_REGISTRIES"
ENV_HF_ENDPOINT: Final = "HF_ENDPOINT"
#: JSON {host: mirror base URL}: the tuning input downloader fetches such URLs from the mirror.
URL_MIRRORS_ENV: Final = "KAITO_URL_MIRRORS"
#: Set on the serving and training containers: they load from MODEL_DIR and must never reach a hub.
OFFLINE_ENV: Final = (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"))
#: ConfigMaps are mounted here; inference reads inference_config.yaml, tuning training_config.yaml.
CONFIG_DIR: Final = "/mnt/config"
INFERENCE_CONFIG_KEY: Final = "inference_config.yaml"
INFERENCE_CONFIG_PATH: Final = f"{CONFIG_DIR}/{INFERENCE_CONFIG_KEY}"
TUNING_CONFIG_KEY: Final = "training_config.yaml"
TUNING_CONFIG_PATH: Final = f"{CONFIG_DIR}/{TUNING_CONFIG_KEY}"
#: Adapters: /mnt/adapter/<name>, one directory per adapter (kaito_presets.runtime.adapters).
ADAPTERS_DIR: Final = "/mnt/adapter"
#: JSON object {name: strength}; the runtime also reads one env var named after each adapter.
ADAPTER_STRENGTHS_ENV: Final = "KAITO_ADAPTER_STRENGTHS"
#: The bearer token the inference server requires (InferenceConfig's API_KEY_ENV), from a Secret.
API_KEY_ENV: Final = "KAITO_API_KEY"
SHM_DIR: Final = "/dev/shm"
#: Tuning data in, results out; the trainer writes the completion marker into the results.
DATA_DIR: Final = "/mnt/data"
RESULTS_DIR: Final = "/mnt/results"
TUNING_COMPLETION_MARKER: Final = "fine_tuning_completed.txt"
#: Written by the trainer when it fails, so the push container stops waiting and the Job fails.
TUNING_FAILURE_MARKER: Final = "fine_tuning_failed.txt"
#: Registry credentials (a kubernetes.io/dockerconfigjson Secret) for the push sidecar / adapter pulls.
PUSH_SECRET_DIR: Final = "/mnt/push-secret"
PULL_SECRET_DIR: Final = "/mnt/pull-secret"
DOCKER_CONFIG_KEY: Final = ".dockerconfigjson"

# Distributed (several nodes): torchrun-style rendezvous env.
ENV_MASTER_ADDR: Final = "MASTER_ADDR"
ENV_MASTER_PORT: Final = "MASTER_PORT"
ENV_NODE_RANK: Final = "NODE_RANK"
ENV_NNODES: Final = "NNODES"
ENV_WORLD_SIZE: Final = "WORLD_SIZE"
ENV_NPROC_PER_NODE: Final = "NPROC_PER_NODE"
ENV_HF_TOKEN: Final = "HF_TOKEN"
#: Label the StatefulSet controller puts on each pod with its ordinal.
POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"


def inference_command(runtime: str, served_model_name: str, *, distributed: bool = False) -> list[str]:
    """The inference server: ``python -m kaito_presets.runtime.inference --config ... --backend ...``.

    On several nodes it runs under ``torchrun`` with the rank env of the StatefulSet pod.
    """
    args = ["-m", INFERENCE_MODULE, "--config", INFERENCE_CONFIG_PATH, "--backend", runtime,
            "--model", MODEL_DIR, "--served-model-name", served_model_name,
            "--adapters-dir", ADAPTERS_DIR, "--port", str(INFERENCE_PORT)]
    if not distributed:
        return [PYTHON, *args]
    # $(VAR) is expanded by the kubelet from the container's env.
    return ["torchrun", f"--nnodes=$({ENV_NNODES})", f"--nproc-per-node=$({ENV_NPROC_PER_NODE})",
            f"--node-rank=$({ENV_NODE_RANK})", f"--master-addr=$({ENV_MASTER_ADDR})",
            f"--master-port=$({ENV_MASTER_PORT})", *args]


def tuning_command(method: str) -> list[str]:
    """The trainer: reads the training ConfigMap, data from /mnt/data, writes the adapter to /mnt/results."""
    return [PYTHON, "-m", TUNING_MODULE, "--method", method, "--config", TUNING_CONFIG_PATH,
            "--model", MODEL_DIR, "--data", DATA_DIR, "--output", RESULTS_DIR]


def download_command(urls: list[str], *, max_bytes: int, attempts: int, deadline: float) -> list[str]:
    """The tuning input downloader (init container): each URL into /mnt/data, size-limited, retried, and
    within ``deadline`` seconds per file."""
    return [PYTHON, "-m", DOWNLOAD_MODULE, "--dest", DATA_DIR, "--max-bytes", str(max_bytes),
            "--attempts", str(attempts), "--deadline", str(float(deadline)), *urls]


def image_data_copy_command() -> list[str]:
    """Init container running the user's data image: copy its /data into /mnt/data."""
    return ["sh", "-c", f"mkdir -p {DATA_DIR} && cp -a /data/. {DATA_DIR}/"]


def push_command(image: str, model_name: str) -> list[str]:
    """The push sidecar: wait for the trainer's completion marker, push /mnt/results as an OCI image."""
    return [PYTHON, "-m", OCI_MODULE, "push", "--src", RESULTS_DIR, "--image", image,
            "--model-name", model_name, "--wait-for", f"{RESULTS_DIR}/{TUNING_COMPLETION_MARKER}",
            "--fail-marker", f"{RESULTS_DIR}/{TUNING_FAILURE_MARKER}",
            "--docker-config", f"{PUSH_SECRET_DIR}/{DOCKER_CONFIG_KEY}", "--credentials-optional"]


def weights_pull_command(*, image: str | None = None, hf_repo: str | None = None, revision: str | None = None,
                         with_secret: bool = False) -> list[str]:
    """The weights init container: an OCI artifact (Kaito's layout) or a Hugging Face repository at a
    revision, into MODEL_DIR; it returns at once when the volume already holds that source."""
    cmd = [PYTHON, "-m", WEIGHTS_MODULE, "pull"]
    if image is not None:
        cmd += ["--image", image]
    else:
        assert hf_repo is not None and revision is not None
        cmd += ["--hf-repo", hf_repo, "--revision", revision]
    cmd += ["--dest", MODEL_DIR]
    if with_secret:
        cmd += ["--docker-config", f"{WEIGHTS_SECRET_DIR}/config.json"]
    return cmd


def adapter_pull_command(image: str, name: str, *, with_secret: bool) -> list[str]:
    """An adapter init container: pull the adapter image into /mnt/adapter/<name>."""
    cmd = [PYTHON, "-m", OCI_MODULE, "pull", "--image", image, "--dest", f"{ADAPTERS_DIR}/{name}"]
    if with_secret:
        cmd += ["--docker-config", PULL_SECRET_DIR]
    return cmd
