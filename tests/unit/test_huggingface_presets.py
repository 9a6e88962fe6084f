"""Issue 19: a Hugging Face id as a preset name, sized from a config.json a loopback hub serves."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kaito_presets import default_catalog, load_catalog
from kaito_presets.huggingface import HuggingFaceResolver, preset_from_config

from kaito_core.api import Workspace, validate_workspace
from kaito_core.controllers.workspace import WorkspaceSettings
from kaito_core.controllers.workspace.context import BuildContext
from kaito_core.controllers.workspace.inference import default_inference_config, inference_workload

SHA = "0123456789abcdef0123456789abcdef01234567"
GI = 2**30
# Qwen/Qwen3-8B's published config.json (the figures that size it).
QWEN3_8B = {
    "architectures": ["Qwen3ForCausalLM"], "hidden_size": 4096, "intermediate_size": 12288,
    "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "max_position_embeddings": 40960, "vocab_size": 151936, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
MODELS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-8B": {"info": {"id": "Qwen/Qwen3-8B", "sha": SHA, "gated": False,
                               "cardData": {"license": "apache-2.0"},
                               "safetensors": {"parameters": {"BF16": 8190735360}, "total": 8190735360}},
                      "config": QWEN3_8B},
    # No safetensors metadata: the parameters are counted from the config.
    "acme/no-metadata": {"info": {"sha": SHA}, "config": QWEN3_8B},
    "acme/broken": {"info": {"sha": SHA}, "config": {"architectures": ["X"], "num_hidden_layers": 2}},
}


class _Hub(BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:
        _Hub.requests.append(self.path)
        body: Any = None
        for hf_id, model in MODELS.items():
            if self.path == f"/api/models/{hf_id}":
                body = model["info"]
            elif self.path == f"/{hf_id}/resolve/{SHA}/config.json":
                body = model["config"]
        if self.path.startswith("/api/models/acme/gated"):
            self.send_response(401)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hub.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def doc(preset: str, sku: str = "Standard_NC24ads_A100_v4") -> dict[str, Any]:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws", "namespace": "ns"},
            "resource": {"instanceType": sku, "labelSelector": {"matchLabels": {"apps": "x"}}},
            "inference": {"preset": {"name": preset}}}


def test_a_hugging_face_id_is_sized_from_its_config(hub: str) -> None:
    catalog = load_catalog(resolver=HuggingFaceResolver(hub))
    preset = catalog.find_model("Qwen/Qwen3-8B")
    assert preset is not None
    assert (preset.name, preset.revision, preset.architecture) == ("Qwen/Qwen3-8B", SHA, "Qwen3ForCausalLM")
    assert preset.parameters == "8.19B" and preset.license == "apache-2.0" and not preset.gated
    assert preset.weights_size == 8190735360 * 2 and preset.context_length == 40960
    assert preset.attention is not None and preset.attention.kv_bytes_per_token == 2 * 36 * 8 * 128 * 2
    # (1.02 x 15.26Gi + 2.3Gi + 2048 tokens x 144Ki) / 0.9, up to a GiB
    assert preset.inference.gpu_memory == 21 * GI and preset.runtimes == ("vllm",)
    assert preset.weights.source == "huggingface"
    assert catalog.find_model("Qwen/Qwen3-8B") is preset  # asked once
    assert _Hub.requests == ["/api/models/Qwen/Qwen3-8B", f"/Qwen/Qwen3-8B/resolve/{SHA}/config.json"]


def test_it_validates_fit_checks_and_renders(hub: str) -> None:
    catalog = load_catalog(resolver=HuggingFaceResolver(hub))
    assert validate_workspace(doc("Qwen/Qwen3-8B"), catalog=catalog) == []
    (small,) = validate_workspace(doc("Qwen/Qwen3-8B", "Standard_NC6s_v3"), catalog=catalog)
    assert small.path == "resource.instanceType" and "Qwen/Qwen3-8B needs 21Gi" in small.message
    ws = Workspace.model_validate(doc("Qwen/Qwen3-8B"))
    ctx = BuildContext(ws=ws, settings=WorkspaceSettings(), preset=catalog.model("Qwen/Qwen3-8B"),
                       sku=catalog.sku("Standard_NC24ads_A100_v4"), nodes=["n0"])
    config = default_inference_config(ctx)
    assert config["served_model_name"] == "Qwen/Qwen3-8B" and config["max_model_len"] == 40960
    pod = inference_workload(ctx)["spec"]["template"]["spec"]
    pulls = " ".join(" ".join(c.get("command", []) + c.get("args", [])) for c in pod.get("initContainers", []))
    assert "Qwen/Qwen3-8B" in pulls and SHA in pulls  # the weights come from the hub at the pinned commit


def test_parameters_are_counted_from_the_config_without_safetensors_metadata(hub: str) -> None:
    preset = load_catalog(resolver=HuggingFaceResolver(hub)).find_model("acme/no-metadata")
    assert preset is not None
    # 36 x (q,o: 2 x 4096 x 4096 + k,v: 2 x 4096 x 1024 + MLP: 3 x 4096 x 12288) + 2 x 151936 x 4096
    assert preset.parameters == "8.19B"


def test_refusals_say_why(hub: str) -> None:
    catalog = load_catalog(resolver=HuggingFaceResolver(hub))
    for name, why in [("acme/missing", "answered 404"), ("acme/gated", "HF_TOKEN"),
                      ("acme/broken", "has no hidden_size")]:
        (error,) = validate_workspace(doc(name), catalog=catalog)
        assert error.path == "inference.preset.name" and error.rule == "UnknownPreset"
        assert f"unknown preset {name!r}" in error.message and why in error.message, error.message
    # A name without a slash never goes to the hub.
    _Hub.requests = []
    assert catalog.find_model("not-a-preset") is None and _Hub.requests == []


def test_the_endpoint_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_HF_ENDPOINT", "http://127.0.0.1:9")
    assert HuggingFaceResolver.from_env().base_url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="KAITO_HF_ENDPOINT"):
        HuggingFaceResolver("file:///etc")
    assert default_catalog().resolver is not None


def test_preset_from_config_reads_multimodal_and_mla_configs() -> None:
    gemma = preset_from_config("google/gemma-3-4b-it", {
        "architectures": ["Gemma3ForConditionalGeneration"], "text_config": {
            "hidden_size": 2560, "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "max_position_embeddings": 131072}}, revision=SHA)
    assert gemma.attention is not None and gemma.attention.kv_bytes_per_token == 139264  # Kaito's catalog figure
    deepseek = preset_from_config("deepseek-ai/DeepSeek-V3", {
        "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128, "kv_lora_rank": 512,
        "qk_rope_head_dim": 64, "max_position_embeddings": 163840}, revision=SHA)
    assert deepseek.attention is not None and deepseek.attention.kv_bytes_per_token == 61 * 576 * 2


def test_a_failure_is_asked_again_later_a_preset_never(hub: str) -> None:
    waits = HuggingFaceResolver(hub, retry_seconds=3600)
    retries = HuggingFaceResolver(hub, retry_seconds=0)
    assert waits("acme/later") is None and retries("acme/later") is None
    MODELS["acme/later"] = MODELS["Qwen/Qwen3-8B"]  # published since
    try:
        assert waits("acme/later") is None and "404" in (waits.reason("acme/later") or "")
        later = retries("acme/later")
        assert later is not None and later.revision == SHA and retries.reason("acme/later") is None
        asked = len(_Hub.requests)
        assert retries("acme/later") is later and len(_Hub.requests) == asked
    finally:
        del MODELS["acme/later"]
