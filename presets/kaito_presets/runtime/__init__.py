"""The in-pod runtimes (extras ``[inference]``, ``[tuning]``, ``[vllm]``).

* ``kaito_presets.runtime.inference`` — the HTTP inference server (transformers or vLLM backend);
* ``kaito_presets.runtime.tuning``    — the LoRA / QLoRA tuning job;
* ``kaito_presets.runtime.download``  — the data downloader of ``tuning.input.urls``;
* ``kaito_presets.runtime.oci``       — push / pull adapters as OCI images;
* ``kaito_presets.runtime.adapters``  — load and combine adapters from ``/mnt/adapter``.

Importing this package imports nothing heavy; torch & co. load only inside the runtimes.
"""

__all__: list[str] = []
