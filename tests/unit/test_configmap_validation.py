"""The contents of inference.config / tuning.config ConfigMaps: one test per rule, each message naming the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from kaito_presets import default_catalog

from kaito_core.api import Rule
from kaito_core.api.configmaps import validate_inference_config, validate_tuning_config

PHI3 = default_catalog().find_model("phi-3-mini-4k-instruct")


def inference(doc: Any) -> dict[str, str]:
    return {"inference_config.yaml": doc if isinstance(doc, str) else yaml.safe_dump(doc)}


def tuning(sections: Any) -> dict[str, str]:
    return {"training_config.yaml": sections if isinstance(sections, str) else
            yaml.safe_dump({"training_config": sections})}


def one(errors: list[Any]) -> tuple[str, str]:
    assert len(errors) == 1, errors
    assert errors[0].rule == Rule.INVALID_CONFIG
    return errors[0].path, errors[0].message


def test_the_defaults_and_the_seeds_shapes_pass() -> None:
    assert validate_inference_config(inference({"vllm": {"max-model-len": "4096", "gpu-memory-utilization": 0.9}}),
                                     name="cm", preset=PHI3) == []
    assert validate_tuning_config(tuning({"LoraConfig": {"r": 16}, "TrainingArguments": {"num_train_epochs": 2}}),
                                  name="cm", method="qlora") == []


# --- inference.config --------------------------------------------------------------------------


def test_inference_key_missing() -> None:
    path, message = one(validate_inference_config({"other.yaml": "a: 1"}, name="my-cm"))
    assert path == "inference.config[inference_config.yaml]" and "ConfigMap my-cm has no key" in message


def test_inference_not_yaml() -> None:
    path, message = one(validate_inference_config(inference("vllm: [unclosed"), name="cm"))
    assert path == "inference.config[inference_config.yaml]" and "is not valid YAML" in message


def test_inference_not_a_mapping() -> None:
    _, message = one(validate_inference_config(inference("- a\n- b\n"), name="cm"))
    assert "must be a YAML mapping" in message


def test_inference_value_type() -> None:
    path, message = one(validate_inference_config(inference({"max_new_tokens": "lots"}), name="cm"))
    assert path == "inference.config[inference_config.yaml].max_new_tokens" and "integer" in message


def test_inference_value_range() -> None:
    path, message = one(validate_inference_config(inference({"port": 70000}), name="cm"))
    assert path == "inference.config[inference_config.yaml].port" and "65535" in message


def test_vllm_max_model_len_beyond_the_context_window() -> None:
    path, message = one(validate_inference_config(inference({"vllm": {"max-model-len": "131072"}}), name="cm",
                                                  preset=PHI3))
    assert path == "inference.config[inference_config.yaml].vllm.max-model-len"
    assert "131072 exceeds phi-3-mini-4k-instruct's context window of 4096" in message


def test_max_model_len_not_a_number() -> None:
    path, message = one(validate_inference_config(inference({"max_model_len": "big"}), name="cm", preset=PHI3))
    assert path == "inference.config[inference_config.yaml].max_model_len" and "not a whole number" in message


# --- tuning.config -----------------------------------------------------------------------------


def test_tuning_key_missing() -> None:
    path, message = one(validate_tuning_config({}, name="my-cm"))
    assert path == "tuning.config[training_config.yaml]"
    assert "ConfigMap my-cm has no key training_config.yaml" in message


def test_tuning_needs_a_training_config_mapping() -> None:
    path, message = one(validate_tuning_config({"training_config.yaml": "other: 1\n"}, name="cm"))
    assert path == "tuning.config[training_config.yaml].training_config" and "required" in message


def test_tuning_unknown_section() -> None:
    path, message = one(validate_tuning_config(tuning({"LoRAConfig": {"r": 8}}), name="cm"))
    assert path == "tuning.config[training_config.yaml].training_config.LoRAConfig"
    assert "unknown section 'LoRAConfig'" in message and "LoraConfig" in message


def test_tuning_section_not_a_mapping() -> None:
    path, message = one(validate_tuning_config(tuning({"LoraConfig": [1, 2]}), name="cm"))
    assert path.endswith("training_config.LoraConfig") and "must be a mapping" in message


def test_quantization_flag_not_a_boolean() -> None:
    path, message = one(validate_tuning_config(tuning({"QuantizationConfig": {"load_in_4bit": "yes"}}),
                                               name="cm", method="qlora"))
    assert path.endswith("QuantizationConfig.load_in_4bit") and "true or false" in message


def test_quantization_both_bits() -> None:
    path, message = one(validate_tuning_config(
        tuning({"QuantizationConfig": {"load_in_4bit": True, "load_in_8bit": True}}), name="cm", method="qlora"))
    assert path.endswith("training_config.QuantizationConfig") and "not both" in message


def test_lora_with_quantization() -> None:
    path, message = one(validate_tuning_config(tuning({"QuantizationConfig": {"load_in_4bit": True}}),
                                               name="cm", method="lora"))
    assert path.endswith("QuantizationConfig") and "method lora" in message


def test_qlora_without_quantization() -> None:
    path, message = one(validate_tuning_config(tuning({"QuantizationConfig": {"load_in_4bit": False}}),
                                               name="cm", method="qlora"))
    assert path.endswith("QuantizationConfig") and "method qlora needs a quantized base model" in message


@pytest.mark.parametrize("value", ["/mnt", "../etc", 42])
def test_output_dir_outside_mnt_or_not_a_string(value: Any) -> None:
    path, message = one(validate_tuning_config(tuning({"TrainingArguments": {"output_dir": value}}), name="cm"))
    assert path == "tuning.config[training_config.yaml].training_config.TrainingArguments.output_dir"
    assert "/mnt" in message


def test_section_value_range() -> None:
    path, message = one(validate_tuning_config(tuning({"LoraConfig": {"lora_dropout": 1.5}}), name="cm"))
    assert path == "tuning.config[training_config.yaml].training_config.LoraConfig.lora_dropout"
    assert "less than 1" in message


def test_dataset_unknown_key() -> None:
    path, message = one(validate_tuning_config(tuning({"DatasetConfig": {"dataset_pth": "/mnt/data"}}), name="cm"))
    assert path.endswith("DatasetConfig.dataset_pth") and "not a known key" in message


def test_kaito_validate_checks_a_configmap_given_in_the_files(tmp_path: Any) -> None:
    import io

    from kaito_core.cli.offline import validate_files

    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune"},
          "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
          "tuning": {"preset": {"name": "phi-3-mini-4k-instruct"}, "method": "qlora", "config": "my-tuning",
                     "input": {"urls": ["https://example.com/data.parquet"]},
                     "output": {"image": "r.example.com/out:1", "imagePushSecret": "s"}}}
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-tuning"},
           "data": tuning({"QuantizationConfig": {"load_in_4bit": False}})}
    both = tmp_path / "all.yaml"
    both.write_text(yaml.safe_dump_all([ws, bad]))
    out = io.StringIO()
    assert validate_files([str(both)], out) == 1
    assert ("workspace/tune: tuning.config[training_config.yaml].training_config.QuantizationConfig: method qlora "
            "needs a quantized base model") in out.getvalue()
    # Without the ConfigMap in the files there is nothing to judge it by: the Workspace alone is valid.
    alone = tmp_path / "ws.yaml"
    alone.write_text(yaml.safe_dump(ws))
    assert validate_files([str(alone)], io.StringIO()) == 0
