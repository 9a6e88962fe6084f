"""A tiny random-weight causal LM and tokenizer, built offline (for tests and benchmarks).

Nothing here touches a model hub: the tokenizer is trained on the fly by ``tokenizers`` and wrapped
as a ``PreTrainedTokenizerFast`` with a Phi-3 style chat template; the model is a Phi-3 architecture
with hidden size 64 and 2 layers, initialised from a fixed seed.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Kubernetes schedules pods onto nodes; a workspace asks for GPU nodes.",
    "What is the capital of France? Paris is the capital of France.",
    "Tell me a joke about large language models and small GPUs.",
    "Fine-tuning with LoRA trains low-rank adapters while the base model stays frozen.",
    "Write a haiku about autumn leaves falling on a quiet river.",
    "Explain how a transformer uses attention to mix information across tokens.",
    "0 1 2 3 4 5 6 7 8 9 ten eleven twelve hello world yes no maybe",
]


def build_tokenizer(vocab_size: int = 384):  # type: ignore[no-untyped-def]
    """Train a byte-level BPE tokenizer on a small built-in corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast


#: The architectures of the catalog's presets -> their ``model_type``; each gets a tiny model of its own kind.
ARCHITECTURES = {
    "Phi3ForCausalLM": "phi3",
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "FalconForCausalLM": "falcon",
}


def build_tiny_model(out_dir: str | Path, *, hidden_size: int = 64, layers: int = 2, seed: int = 0,
                     architecture: str = "Phi3ForCausalLM") -> Path:
    """Write a tiny random-weight model of ``architecture`` (a preset's) and its tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    if architecture not in ARCHITECTURES:
        raise ValueError(f"no tiny model for {architecture}; known: {', '.join(ARCHITECTURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if architecture == "FalconForCausalLM":
        extra: dict[str, object] = {"new_decoder_architecture": True, "num_kv_heads": 4, "alibi": False}
    else:
        extra = {"intermediate_size": hidden_size * 2, "num_key_value_heads": 4, "max_position_embeddings": 512}
        if architecture == "Phi3ForCausalLM":
            extra["original_max_position_embeddings"] = 512
    config = AutoConfig.for_model(ARCHITECTURES[architecture], **common, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_adapter(model_dir: str | Path, out_dir: str | Path, *, seed: int = 1, rank: int = 8) -> Path:
    """A LoRA adapter for the tiny model in ``model_dir`` with random (not zero) weights, so that it
    changes the model's answers at strength 1 (peft's default init would make it a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=rank, lora_alpha=rank * 4, target_modules="all-linear", init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    out = Path(out_dir)
    peft_model.save_pretrained(out)
    return out
