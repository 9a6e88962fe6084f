"""The manifests and the images agree: the operator's rendered pods, run for real in our own images.

kwok never runs a container, so here each pod the operator renders for a seed example runs under
podman + runc in the image ``nox -s images`` builds: the weights init container pulls a tiny
random-weight model published in Kaito's weights layout to Debian's registry on loopback, then the
server answers the seed's curl body, Kaito's documented body, the official ``openai`` client and
``/metrics``; the tuning Job's three containers download a parquet from a loopback server, train one
QLoRA step and push the adapter, which an adapter Workspace's pod then pulls and serves.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import images_support
import pytest
import yaml
from kaito_presets import default_catalog

from kaito_core.api import Workspace
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import default_inference_config_data, inference_workload
from kaito_core.controllers.workspace.settings import WorkspaceSettings
from kaito_core.controllers.workspace.tuning import tuning_job
from kaito_core.testing.images import ImageRef
from kaito_core.testing.podman import Podman
from kaito_core.testing.podman_pod import InitContainerFailed, PodmanPod

from .conftest import Registry, cpu_overrides, write_seed_parquet

runtime_images = images_support.runtime_images
podman = images_support.podman

pytestmark = pytest.mark.runtime

EXAMPLES = Path(__file__).parents[2] / "examples"
CATALOG = default_catalog()
SEED_CURL_BODY = {"prompt": "YOUR QUESTION HERE"}
# Kaito's documented /chat body (its inference docs), verbatim.
KAITO_BODY = {
    "prompt": "What is your favourite condiment?", "return_full_text": False,
    "clean_up_tokenization_spaces": False, "prefix": None, "handle_long_generation": None,
    "generate_kwargs": {
        "max_length": 200, "min_length": 0, "do_sample": True, "early_stopping": False, "num_beams": 1,
        "num_beam_groups": 1, "diversity_penalty": 0.0, "temperature": 1.0, "top_k": 10, "top_p": 1,
        "typical_p": 1, "repetition_penalty": 1, "length_penalty": 1, "no_repeat_ngram_size": 0,
        "encoder_no_repeat_ngram_size": 0, "bad_words_ids": None, "num_return_sequences": 1,
        "output_scores": False, "return_dict_in_generate": False, "forced_bos_token_id": None,
        "forced_eos_token_id": None, "remove_invalid_values": None}}


def seed(name: str) -> Workspace:
    obj = yaml.safe_load((EXAMPLES / name).read_text())
    obj["metadata"].update({"namespace": "default", "uid": "uid-" + obj["metadata"]["name"]})
    return Workspace.from_dict(obj)


def settings_for(registry: Registry, images: dict[str, ImageRef]) -> WorkspaceSettings:
    """The operator as a platform team would configure it for this registry and these images."""
    runtime = images["runtime"]
    return WorkspaceSettings(image_registry="localhost", image_tag=runtime.tag.rsplit(":", 1)[1],
                             weights_registry=f"{registry.host}/kaito", default_runtime="transformers")


def ctx_for(ws: Workspace, settings: WorkspaceSettings) -> BuildContext:
    assert ws.preset is not None
    return BuildContext(ws=ws, settings=settings, preset=CATALOG.model(ws.preset.name),
                        sku=CATALOG.find_sku(ws.resource.instance_type or ""), nodes=["node-0"])


@pytest.fixture(scope="module")
def published(tiny_model: Path, registry: Registry) -> Registry:
    """The tiny model published under the seed presets' artifact names, in Kaito's layout."""
    from kaito_presets.runtime.weights import push_oci

    for preset in ("phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct"):
        push_oci(tiny_model, f"{registry.host}/kaito/kaito-{preset}:{CATALOG.model(preset).weights.tag}")
    return registry


@pytest.fixture
def loopback_files(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP file server on 127.0.0.1 (the tuning data's stand-in host)."""
    root = tmp_path / "served"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def serving_pod(podman: Podman, ws: Workspace, settings: WorkspaceSettings, workdir: Path,
                images: dict[str, ImageRef], **extra: Any) -> PodmanPod:
    ctx = ctx_for(ws, settings)
    # CPU: the default config asks for dtype auto and device_map auto; both work on CPU as rendered.
    template = inference_workload(ctx, config_data=default_inference_config_data(ctx))["spec"]["template"]
    return PodmanPod(podman, template["spec"], workdir=workdir, images=_local(settings, images),
                     annotations=template["metadata"]["annotations"], name=ws.name, **extra)


def _local(settings: WorkspaceSettings, images: dict[str, ImageRef]) -> dict[str, str]:
    return {f"localhost/kaito-runtime:{settings.image_tag}": images["runtime"].tag}


def test_seed_inference_pod_pulls_its_weights_and_serves(
    podman: Podman, runtime_images: dict[str, ImageRef], published: Registry, tmp_path: Path
) -> None:
    from openai import OpenAI

    settings = settings_for(published, runtime_images)
    ws = seed("kaito_workspace_phi_3.yaml")
    pod = serving_pod(podman, ws, settings, tmp_path, runtime_images)
    (pulled,) = pod.run_init()
    assert pulled.name == "model-weights-downloader" and pulled.exit_code == 0
    assert (pod.volumes()["model-weights-volume"] / "config.json").is_file()
    pod.start()
    pod.wait_ready(timeout=300)
    base = "http://127.0.0.1:5000"
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    answer = httpx.post(f"{base}/chat", json=SEED_CURL_BODY, timeout=120)
    assert answer.status_code == 200, answer.text
    assert isinstance(answer.json()["Result"], str)
    kaito = httpx.post(f"{base}/chat", json=KAITO_BODY, timeout=120)
    assert kaito.status_code == 200, kaito.text
    assert isinstance(kaito.json()["Result"], str)
    client = OpenAI(base_url=f"{base}/v1", api_key="unused")
    completion = client.chat.completions.create(
        model="phi-3-mini-4k-instruct", messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    assert completion.choices[0].message.content is not None
    assert completion.usage is not None and completion.usage.completion_tokens >= 1
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "kaito_inference_requests_total" in metrics or "requests" in metrics
    pod.stop()


@pytest.mark.parametrize("problem", ["missing", "wrong layout"])
def test_a_bad_weights_artifact_fails_the_init_container_and_the_workspace_says_why(
    podman: Podman, runtime_images: dict[str, ImageRef], registry: Registry, tmp_path: Path, *, problem: str,
    lora_adapter: Path,
) -> None:
    from kaito_presets.runtime.oci import push_adapter

    from kaito_core.controllers.workspace.status import inference_check

    folder = "none" if problem == "missing" else "adapters"
    artifact = f"{registry.host}/{folder}/kaito-phi-3-mini-4k-instruct:0.2.0"
    if problem == "wrong layout":  # an adapter image where the weights artifact should be
        push_adapter(lora_adapter, artifact, model_name="phi-3-mini-4k-instruct")
    settings = settings_for(registry, runtime_images).model_copy(
        update={"weights_registry": f"{registry.host}/{folder}"})
    pod = serving_pod(podman, seed("kaito_workspace_phi_3.yaml"), settings, tmp_path, runtime_images)
    with pytest.raises(InitContainerFailed) as failed:
        pod.run_init(timeout=120)
    result = failed.value.result
    assert result.exit_code == 1 and artifact in result.message
    expected = "not found" if problem == "missing" else "is not a model weights artifact"
    assert expected in result.message
    # The kubelet reports that message as the init container's last termination; the Workspace quotes it.
    status = {"initContainerStatuses": [{"name": result.name, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                         "lastState": {"terminated": {"reason": "Error", "exitCode": result.exit_code,
                                                                      "message": result.message}}}]}
    workload = {"kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 1},
                "status": {"observedGeneration": 1}}
    check = inference_check(workload, [{"metadata": {"name": "workspace-phi-3-mini-0"}, "status": status}])
    assert check.reason == "InferenceFailed" and artifact in check.message and expected in check.message


def test_seed_tuning_job_trains_and_pushes_then_an_adapter_workspace_serves_it(
    podman: Podman, runtime_images: dict[str, ImageRef], published: Registry, tmp_path: Path,
    loopback_files: tuple[str, Path],
) -> None:
    settings = settings_for(published, runtime_images)
    url, served = loopback_files
    # The seed tuning Workspace: its dataset URL is answered by a loopback stand-in through the
    # operator's url_mirrors (the URL unchanged); its output placeholder is pointed at our registry.
    obj = yaml.safe_load((EXAMPLES / "kaito_workspace_tuning_phi_3.yaml").read_text())
    obj["metadata"].update({"namespace": "default", "uid": "uid-tuning"})
    seed_url = obj["tuning"]["input"]["urls"][0]
    name = seed_url.split("?")[0].rsplit("/", 1)[1]
    stand_in = served / "datasets/philschmid/dolly-15k-oai-style/resolve/main/data" / name
    write_seed_parquet(stand_in)
    settings = settings.model_copy(update={"url_mirrors": {"huggingface.co": url}})
    adapter_image = f"{published.host}/adapter-phi-3:0.0.1"
    obj["tuning"]["output"]["image"] = adapter_image
    # A CPU training config through the operator's own knob (tuning.config): one float32 step.
    obj["tuning"]["config"] = "cpu-training"
    over = cpu_overrides(Path("/workspace/weights"), Path("/mnt/data"), Path("/mnt/results"), steps=1)
    over["ModelConfig"] = {"torch_dtype": "float32", "local_files_only": True}
    training = yaml.safe_dump({"training_config": {k: over[k] for k in (
        "ModelConfig", "QuantizationConfig", "TrainingArguments")}})
    ws = Workspace.from_dict(obj)
    spec = tuning_job(ctx_for(ws, settings))["spec"]["template"]["spec"]
    push_secret = obj["tuning"]["output"]["imagePushSecret"]
    pod = PodmanPod(podman, spec, workdir=tmp_path / "job", images=_local(settings, runtime_images),
                    config_maps={"cpu-training": {"training_config.yaml": training}},
                    secrets={push_secret: {".dockerconfigjson": json.dumps({"auths": {}})}}, name="tuning")
    names = [r.name for r in pod.run_init()]
    assert names == ["model-weights-downloader", "data-downloader"]
    handles = pod.start()
    for name in ("tuning", "pusher"):
        code = handles[name].wait(timeout=600)
        assert code == 0, f"{name} exited {code}:\n{handles[name].logs()[-4000:]}"
    manifest = httpx.get(f"http://{published.host}/v2/adapter-phi-3/manifests/0.0.1", timeout=10,
                         headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    assert manifest.status_code == 200

    # The seed adapter Workspace, pointed at the adapter the Job pushed: strength 1 vs 0.
    answers = {}
    for strength in ("1.0", "0.0"):
        obj = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3_with_adapters.yaml").read_text())
        obj["metadata"].update({"namespace": "default", "uid": "uid-adapter"})
        obj["inference"]["adapters"][0]["source"]["image"] = adapter_image
        obj["inference"]["adapters"][0]["strength"] = strength
        pod = serving_pod(podman, Workspace.from_dict(obj), settings, tmp_path / f"s{strength}", runtime_images)
        assert [r.name for r in pod.run_init()] == ["model-weights-downloader", "adapter-phi-3-adapter"]
        pod.start()
        pod.wait_ready(timeout=300)
        reply = httpx.post("http://127.0.0.1:5000/v1/completions", timeout=120, json={
            "model": "phi-3-mini-128k-instruct", "prompt": "What is the capital of France?", "max_tokens": 12,
            "temperature": 0, "logprobs": 1})
        assert reply.status_code == 200, reply.text
        answers[strength] = reply.json()["choices"][0]
        pod.stop()
        for handle in pod.handles.values():
            podman.rm(handle.name)
    assert answers["1.0"] != answers["0.0"], "strength 0 and 1 gave the same output: the adapter was not applied"


def test_a_hugging_face_source_downloads_in_the_init_container_with_the_token(
    podman: Podman, runtime_images: dict[str, ImageRef], registry: Registry, tmp_path: Path, tiny_model: Path,
) -> None:
    from kaito_core.testing.hfhub import HubServer

    revision = "0123456789abcdef0123456789abcdef01234567"
    with HubServer(tiny_model, repo="org/tiny-phi3", revision=revision, token="hf_s3cret") as hub:
        settings = settings_for(registry, runtime_images).model_copy(update={"huggingface_endpoint": hub.url})
        obj = yaml.safe_load((EXAMPLES / "kaito_workspace_phi_3.yaml").read_text())
        obj["metadata"].update({"namespace": "default", "uid": "uid-hf", "annotations": {
            "kaito.sh/model-weights": f"hf://org/tiny-phi3@{revision}"}})
        obj["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
        ws = Workspace.from_dict(obj)
        for token, ok in (("hf_s3cret", True), ("hf_wrong", False)):
            pod = serving_pod(podman, ws, settings, tmp_path / token, runtime_images,
                              secrets={"hf-token": {"HF_TOKEN": token}})
            if ok:
                assert [r.exit_code for r in pod.run_init(timeout=300)] == [0]
                assert (pod.volumes()["model-weights-volume"] / "config.json").is_file()
                continue
            with pytest.raises(InitContainerFailed) as failed:
                pod.run_init(timeout=300)
            message = failed.value.result.message
            assert f"org/tiny-phi3@{revision}" in message and "modelAccessSecret" in message
            assert "hf_wrong" not in message and "hf_wrong" not in failed.value.result.logs  # never the token
