"""The model and GPU SKU catalogs: complete, consistent, cited, and looked up case-insensitively."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
from kaito_presets import (
    CatalogError,
    UnknownPresetError,
    UnknownSkuError,
    default_catalog,
    format_quantity,
    get_preset,
    get_sku,
    load_catalog,
    parse_quantity,
)
from kaito_presets.sizing import nodes_needed, smallest_fit

GI = 2**30

ISSUE_MODELS = [
    "phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct", "phi-3-medium-4k-instruct",
    "phi-3-medium-128k-instruct", "phi-3.5-mini-instruct", "phi-4", "phi-4-mini-instruct",
    "mistral-7b", "mistral-7b-instruct", "qwen2.5-coder-7b-instruct", "qwen2.5-coder-32b-instruct",
    "llama-3.1-8b-instruct", "deepseek-r1-distill-qwen-14b", "falcon-7b", "falcon-40b",
    # issue 19: the rest of Kaito v0.12's catalog
    "llama-3.3-70b-instruct", "deepseek-r1-0528", "deepseek-v3-0324", "deepseek-r1-distill-llama-8b",
    "gemma-3-4b-instruct", "gemma-3-27b-instruct", "gpt-oss-20b", "gpt-oss-120b", "ministral-3-3b-instruct",
    "ministral-3-8b-instruct", "ministral-3-14b-instruct", "mistral-large-3-675b-instruct", "phi-2",
]
#: Gated on Hugging Face: the licence must be accepted and a token given.
GATED = {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "gemma-3-4b-instruct", "gemma-3-27b-instruct"}

AZURE_SKUS = {
    # name: (gpus, gpu model, total GPU memory GiB, vCPUs, quota family)
    "Standard_NC6s_v3": (1, "V100", 16, 6, "standardNCSv3Family"),
    "Standard_NC12s_v3": (2, "V100", 32, 12, "standardNCSv3Family"),
    "Standard_NC24s_v3": (4, "V100", 64, 24, "standardNCSv3Family"),
    "Standard_NC4as_T4_v3": (1, "T4", 16, 4, "standardNCASv3_T4Family"),
    "Standard_NC8as_T4_v3": (1, "T4", 16, 8, "standardNCASv3_T4Family"),
    "Standard_NC16as_T4_v3": (1, "T4", 16, 16, "standardNCASv3_T4Family"),
    "Standard_NC64as_T4_v3": (4, "T4", 64, 64, "standardNCASv3_T4Family"),
    "Standard_NV36ads_A10_v5": (1, "A10", 24, 36, "StandardNVADSA10v5Family"),
    "Standard_NC24ads_A100_v4": (1, "A100", 80, 24, "StandardNCADSA100v4Family"),
    "Standard_NC48ads_A100_v4": (2, "A100", 160, 48, "StandardNCADSA100v4Family"),
    "Standard_NC96ads_A100_v4": (4, "A100", 320, 96, "StandardNCADSA100v4Family"),
    "Standard_ND96asr_v4": (8, "A100", 320, 96, "standardNDASv4_A100Family"),
    "Standard_ND96amsr_A100_v4": (8, "A100", 640, 96, "standardNDAMSv4_A100Family"),
    "Standard_NC40ads_H100_v5": (1, "H100", 94, 40, "standardNCadsH100v5Family"),
    "Standard_ND96isr_H100_v5": (8, "H100", 640, 96, "standardNDSH100v5Family"),
    "Standard_ND96isr_H200_v5": (8, "H200", 1128, 96, "standardNDISRH200V5Family"),
}
AWS_SKUS = {
    "g5.xlarge": (1, "A10G", 24, 4), "g5.12xlarge": (4, "A10G", 96, 48), "g5.48xlarge": (8, "A10G", 192, 192),
    "g6.xlarge": (1, "L4", 24, 4), "g6.12xlarge": (4, "L4", 96, 48), "g6.48xlarge": (8, "L4", 192, 192),
    "p4d.24xlarge": (8, "A100", 320, 96), "p5.48xlarge": (8, "H100", 640, 192),
}


def test_every_model_of_the_issue_is_there_with_its_figures() -> None:
    catalog = default_catalog()
    for name in ISSUE_MODELS:
        model = catalog.model(name)
        assert model.weights_size > 0 and model.context_length > 0
        assert model.inference.gpu_memory >= model.weights_size
        assert model.inference.disk >= model.weights_size
        assert set(model.runtimes) <= {"vllm", "transformers"} and model.runtimes
        assert model.source.startswith("https://huggingface.co/")
        if model.tuning is not None:
            assert set(model.tuning.methods) <= {"lora", "qlora"} and model.tuning.target_modules


def test_the_catalog_is_kaitos_thirty_with_kv_figures() -> None:
    catalog = default_catalog()
    assert len(catalog.models) == 30 and set(ISSUE_MODELS) <= set(catalog.model_names())
    for model in catalog.models:
        assert model.attention is not None, f"{model.name} has no attention figures to size its context by"
    # Figures from Kaito's catalog and the model configs (the KV bytes Kaito's generator counts).
    assert catalog.model("phi-2").attention.kv_bytes_per_token == 327680  # type: ignore[union-attr]
    assert catalog.model("deepseek-v3-0324").attention.kv_bytes_per_token == 61 * (512 + 64) * 2  # type: ignore[union-attr]
    assert catalog.model("llama-3.3-70b-instruct").attention.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2  # type: ignore[union-attr]
    assert catalog.model("ministral-3-8b-instruct").runtimes == ("vllm",)
    assert catalog.model("gpt-oss-20b").weights.source == "oci" and catalog.model("gpt-oss-20b").weights.tag == "0.0.2"
    assert catalog.model("gpt-oss-120b").weights.source == "huggingface"
    assert catalog.model("mistral-large-3-675b-instruct").revision == "7f13ed24ab52a2a1c35bb26a749ef9d891ee98dd"
    assert catalog.model("deepseek-r1-0528").context_length == 163840


@pytest.mark.parametrize(("name", "cloud", "sku", "nodes"), [
    ("llama-3.3-70b-instruct", "azure", "Standard_NC48ads_A100_v4", 1),
    ("deepseek-r1-0528", "azure", "Standard_ND96isr_H200_v5", 1),
    ("deepseek-v3-0324", "aws", "p5.48xlarge", 2),
    ("mistral-large-3-675b-instruct", "aws", "p5.48xlarge", 2),
    ("phi-3-mini-4k-instruct", "aws", "g5.xlarge", 1),
])
def test_smallest_fit_counts_nodes_for_the_presets_that_split(name: str, cloud: str, sku: str, nodes: int) -> None:
    catalog = default_catalog()
    fit = smallest_fit(catalog, catalog.model(name), cloud)
    assert fit is not None and (fit[0].name, fit[1]) == (sku, nodes)
    llama = catalog.model("llama-3.3-70b-instruct").inference
    assert nodes_needed(catalog.sku("Standard_NC24ads_A100_v4"), llama.gpu_memory, llama.gpu_count) == 2


def test_gated_and_tuning_flags() -> None:
    catalog = default_catalog()
    assert {m.name for m in catalog.models if m.gated} == GATED
    assert catalog.model("phi-3-mini-128k-instruct").tuning_methods == ("lora", "qlora")
    assert not catalog.model("falcon-40b").supports_tuning
    assert catalog.model("phi-3-mini-4k-instruct").tuning.target_modules == ("qkv_proj", "o_proj")  # type: ignore[union-attr]
    assert catalog.model("mistral-7b").tuning.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")  # type: ignore[union-attr]
    assert catalog.model("phi-4").default_runtime == "vllm"


@pytest.mark.parametrize("name", sorted(AZURE_SKUS))
def test_azure_skus(name: str) -> None:
    gpus, model, memory_gib, vcpus, family = AZURE_SKUS[name]
    sku = get_sku(name)
    assert (sku.cloud, sku.gpu_count, sku.gpu_model, sku.gpu_memory, sku.vcpus, sku.quota_family) == (
        "azure", gpus, model, memory_gib * GI, vcpus, family)


@pytest.mark.parametrize("name", sorted(AWS_SKUS))
def test_aws_skus(name: str) -> None:
    gpus, model, memory_gib, vcpus = AWS_SKUS[name]
    sku = get_sku(name)
    assert (sku.cloud, sku.gpu_count, sku.gpu_model, sku.gpu_memory, sku.vcpus) == ("aws", gpus, model,
                                                                                    memory_gib * GI, vcpus)


def test_lookups_ignore_case_and_suggest_close_names() -> None:
    catalog = default_catalog()
    assert catalog.sku("standard_nc6s_v3").name == "Standard_NC6s_v3"
    assert catalog.sku("G5.XLARGE").name == "g5.xlarge"
    assert get_preset("PHI-3-MINI-4K-INSTRUCT").name == "phi-3-mini-4k-instruct"
    with pytest.raises(UnknownPresetError) as unknown:
        catalog.model("phi-3-mini")
    assert unknown.value.suggestions[:2] == ["phi-3-mini-128k-instruct", "phi-3-mini-4k-instruct"]
    with pytest.raises(UnknownSkuError) as unknown_sku:
        catalog.sku("Standard_NC6_v3")
    assert "Standard_NC6s_v3" in unknown_sku.value.suggestions
    assert catalog.find_sku("nope") is None and catalog.find_model("nope") is None


def test_seed_examples_fit_standard_nc6s_v3() -> None:
    sku = get_sku("Standard_NC6s_v3")
    for name in ("phi-3-mini-4k-instruct", "phi-3-mini-128k-instruct"):
        assert get_preset(name).inference.gpu_memory <= sku.gpu_memory
    need = get_preset("phi-3-mini-128k-instruct").tuning_gpu_memory("qlora")
    assert need is not None and need <= sku.gpu_memory


def test_suggestion_is_the_smallest_instance_that_fits() -> None:
    need = get_preset("phi-3-medium-4k-instruct").inference.gpu_memory
    assert need == 28 * GI
    assert default_catalog().suggest_skus(need, 1, cloud="azure")[0].name == "Standard_NC24ads_A100_v4"
    assert default_catalog().suggest_skus(need, 1, cloud="aws")[0].name == "g5.12xlarge"


def test_every_data_file_cites_its_source_and_is_packaged() -> None:
    root = resources.files("kaito_presets") / "catalog"
    files = [p for folder in ("models", "skus") for p in (root / folder).iterdir() if p.name.endswith(".yaml")]
    assert len(files) >= 9
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "https://" in text.split("\n\n")[0] or "# Source" in text, path.name
        assert "source:" in text


@pytest.mark.parametrize(("text", "size"), [
    ("16Gi", 16 * GI), ("7.12Gi", round(7.12 * GI)), ("500M", 500_000_000), ("1Ti", 2**40), (1024, 1024)])
def test_quantities(text: str | int, size: int) -> None:
    assert parse_quantity(text) == size


def test_quantity_errors_and_formatting() -> None:
    for bad in ("16GB", "-1Gi", True, None, "Gi", -5):
        with pytest.raises(ValueError):
            parse_quantity(bad)
    assert format_quantity(16 * GI) == "16Gi"
    assert format_quantity(round(7.12 * GI)) == "7.12Gi"
    assert format_quantity(1128 * GI) == "1.1Ti"


def _write(folder: Path, models: str, skus: str) -> Path:
    (folder / "models").mkdir(parents=True)
    (folder / "skus").mkdir()
    (folder / "models" / "m.yaml").write_text(models)
    (folder / "skus" / "s.yaml").write_text(skus)
    return folder


_SKUS = ("cloud: azure\nsource: https://x\nskus:\n- {name: A, series: s, quotaFamily: f, vcpus: 1, memory: 1Gi,"
         " gpuCount: 1, gpuModel: T4, gpuMemory: 16Gi, computeCapability: '7.5'}\n")
_MODEL = ("family: f\nsource: https://x\nmodels:\n- name: m\n  huggingfaceId: o/m\n"
          f"  revision: '{'0' * 40}'\n"
          "  weights: {{source: oci, tag: 0.2.0}}\n  source: https://huggingface.co/o/m\n"
          "  architecture: A\n  parameters: 1B\n  license: mit\n  weightsSize: {weights}\n  contextLength: 10\n"
          "  runtimes: [vllm]\n  inference: {{gpuMemory: 4Gi, gpuCount: 1, disk: 10Gi}}\n")


def test_a_custom_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(_write(tmp_path, _MODEL.format(weights="2Gi"), _SKUS))
    assert catalog.model_names() == ["m"] and catalog.sku_names() == ["A"]


@pytest.mark.parametrize(("models", "skus", "complaint"), [
    (_MODEL.format(weights="8Gi"), _SKUS, "less than weightsSize"),
    (_MODEL.format(weights="2Gi") + "  colour: blue\n", _SKUS, "colour"),
    (_MODEL.format(weights="2Gi"), _SKUS.replace("gpuCount: 1", "gpuCount: 0"), "gpuCount"),
    (_MODEL.format(weights="2Gi"), _SKUS + _SKUS.split("skus:\n")[1].replace("A,", "a,"), "defined twice"),
    ("models: [", _SKUS, "not valid YAML"),
])
def test_a_bad_catalog_is_refused_with_the_file_and_field(
        tmp_path: Path, models: str, skus: str, complaint: str) -> None:
    with pytest.raises(CatalogError, match=complaint):
        load_catalog(_write(tmp_path, models, skus))
