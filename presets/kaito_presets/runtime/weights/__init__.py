"""Model weights for the inference pod: pull a CNCF ModelPack artifact (or a Hugging Face snapshot) into
a directory, and publish a model directory as a ModelPack artifact.

The artifact is what aikit's ``packager/modelpack`` target writes with its default ``raw`` packaging
(what Kaito 0.12 publishes for its presets and pulls with ``oras pull REF -o /workspace/weights``):

* manifest ``application/vnd.oci.image.manifest.v1+json`` with ``artifactType``
  ``application/vnd.cncf.model.manifest.v1+json``; config ``application/vnd.cncf.model.config.v1+json``
  whose blob is ``{}``;
* one layer per file, the file's bytes as they are, its media type by category
  (``application/vnd.cncf.model.{weight,weight.config,doc,code,dataset}.v1.raw``), annotated with
  ``org.opencontainers.image.title`` / ``org.cncf.model.filepath`` (the path relative to the model
  directory), ``org.cncf.model.file.metadata+json`` and ``org.cncf.model.file.mediatype.untested``.

The puller also accepts the tar modes (``.v1.tar``, ``.v1.tar+gzip``, ``.v1.tar+zstd``; zstd only when the
``zstandard`` package is installed). Every blob is streamed to disk and its digest verified; no path may
leave the destination directory.

CLI (the operator renders these command lines)::

    python -m kaito_presets.runtime.weights pull --image REF --dest DIR [--docker-config PATH] [--attempts N]
    python -m kaito_presets.runtime.weights pull --hf-repo ORG/NAME --revision REV --dest DIR [--attempts N]
    python -m kaito_presets.runtime.weights push --src DIR --image REF [--docker-config PATH]

A finished pull writes ``DIR/.kaito-weights.json`` (``{"source", "digest"}``) atomically; a later pull of the
same source returns at once, a pull of another source clears the directory first. A failure exits 1 with one
paragraph on stderr that is also written to the Kubernetes termination-message file
(``$KAITO_TERMINATION_LOG``, else ``/dev/termination-log`` when the kubelet created it). Transient errors
(connection refused/reset, timeouts, 5xx, 429) are retried ``--attempts`` times with backoff; 401/403/404
and a wrong layout are not.
"""

from .cli import build_parser, main
from .common import (
    ANNOTATION_TITLE,
    ARTIFACT_TYPE,
    DEFAULT_ATTEMPTS,
    MARKER,
    MODEL_CONFIG_MEDIA_TYPE,
    WeightsError,
    classify,
    media_type,
)
from .hf_pull import pull_hf
from .oci_pull import mirrored, pull_oci
from .push import build_manifest, push_oci
from .store import check_model_dir, read_marker

__all__ = [
    "ANNOTATION_TITLE",
    "ARTIFACT_TYPE",
    "DEFAULT_ATTEMPTS",
    "MARKER",
    "MODEL_CONFIG_MEDIA_TYPE",
    "WeightsError",
    "build_manifest",
    "build_parser",
    "check_model_dir",
    "classify",
    "main",
    "media_type",
    "mirrored",
    "pull_hf",
    "pull_oci",
    "push_oci",
    "read_marker",
]
