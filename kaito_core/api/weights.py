"""Where a Workspace's model weights come from: the ``kaito.sh/model-weights`` annotation.

A preset's weights come from the catalog's default (an OCI artifact in Kaito's layout, or
the Hugging Face repository at the pinned revision). A Workspace may name another source
with the annotation, one of:

* ``oci://REGISTRY/REPOSITORY:TAG`` (or ``@sha256:...``): a weights artifact in Kaito's
  (CNCF ModelPack) layout, pulled by the weights init container;
* ``hf://ORG/NAME@REVISION``: a Hugging Face repository at a revision (a 40-hex commit is
  best: a branch name moves), downloaded by the same init container;
* ``pvc://CLAIM`` or ``pvc://CLAIM/SUB/PATH``: a PersistentVolumeClaim in the Workspace's
  namespace that already holds the weights (mounted read-only, nothing is downloaded).

One parser for the webhook, the reconciler and ``kaito validate`` alike; a bad value raises
:class:`ValueError` with a message that says what to write instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from kaito_core.api.constants import GROUP

__all__ = [
    "ANNOTATION_MODEL_WEIGHTS",
    "WEIGHTS_KIND_HUGGINGFACE",
    "WEIGHTS_KIND_OCI",
    "WEIGHTS_KIND_VOLUME",
    "WeightsSource",
    "parse_weights_source",
]

#: On a Workspace: where the preset's weights come from (see the module docstring).
ANNOTATION_MODEL_WEIGHTS: Final = f"{GROUP}/model-weights"

WEIGHTS_KIND_OCI: Final = "oci"
WEIGHTS_KIND_HUGGINGFACE: Final = "huggingface"
WEIGHTS_KIND_VOLUME: Final = "volume"

WeightsKind = Literal["oci", "huggingface", "volume"]

_FORMS = "oci://REGISTRY/REPOSITORY:TAG, hf://ORG/NAME@REVISION or pvc://CLAIM[/SUBPATH]"
# Every pattern is used with fullmatch: "$" would also match before a trailing newline.
# A registry host (with an optional port), a repository path and a tag or digest.
_OCI = re.compile(
    r"(?P<host>[A-Za-z0-9.\-]+(?::[0-9]{1,5})?)/(?P<repo>[a-z0-9]+(?:[._\-/][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))")
_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")
_HF_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,254}")
_DNS_1123 = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SUBPATH = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")


@dataclass(frozen=True)
class WeightsSource:
    """One source of model weights; which fields are set depends on ``kind``."""

    kind: WeightsKind
    image: str | None = None
    """oci: the artifact reference (no scheme)."""
    repo: str | None = None
    """huggingface: ``org/name``."""
    revision: str | None = None
    """huggingface: the commit, tag or branch."""
    claim: str | None = None
    """volume: the PersistentVolumeClaim's name."""
    sub_path: str | None = None
    """volume: the folder inside the claim that holds the model (``config.json`` and the weights)."""

    def describe(self) -> str:
        """The source as a person would write it (the annotation's form)."""
        if self.kind == WEIGHTS_KIND_OCI:
            return f"oci://{self.image}"
        if self.kind == WEIGHTS_KIND_HUGGINGFACE:
            return f"hf://{self.repo}@{self.revision}"
        return f"pvc://{self.claim}" + (f"/{self.sub_path}" if self.sub_path else "")


def parse_weights_source(value: str) -> WeightsSource:
    """Parse the annotation's value; :class:`ValueError` names the form to use."""
    text = value.strip() if isinstance(value, str) else ""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ValueError(f"{value!r} has no scheme; write {_FORMS}")
    if scheme == "oci":
        match = _OCI.fullmatch(rest)
        if match is None:
            raise ValueError(f"{value!r} is not an artifact reference; write oci://REGISTRY/REPOSITORY:TAG "
                             "(e.g. oci://myregistry.azurecr.io/kaito-phi-3-mini-4k-instruct:0.2.0)")
        if "." not in match["host"] and ":" not in match["host"] and match["host"] != "localhost":
            raise ValueError(f"{value!r} names no registry host (the part before the first '/' must be a "
                             "host such as myregistry.azurecr.io); write oci://REGISTRY/REPOSITORY:TAG")
        return WeightsSource(WEIGHTS_KIND_OCI, image=rest)
    if scheme == "hf":
        repo, at, revision = rest.partition("@")
        if not _HF_REPO.fullmatch(repo):
            raise ValueError(f"{value!r}: {repo!r} is not a Hugging Face repository id; write hf://ORG/NAME@REVISION")
        if not at or not _HF_REVISION.fullmatch(revision) or ".." in revision:
            raise ValueError(f"{value!r} pins no revision; write hf://{repo}@REVISION with the commit to serve "
                             "(a branch name would change what is served without a change to the Workspace)")
        return WeightsSource(WEIGHTS_KIND_HUGGINGFACE, repo=repo, revision=revision)
    if scheme == "pvc":
        claim, slash, sub = rest.partition("/")
        if not _DNS_1123.fullmatch(claim):
            raise ValueError(f"{value!r}: {claim!r} is not a PersistentVolumeClaim name; write pvc://CLAIM[/SUBPATH]")
        sub = sub.strip("/")
        if slash and sub and (not _SUBPATH.fullmatch(sub) or any(part in (".", "..") for part in sub.split("/"))):
            raise ValueError(f"{value!r}: {sub!r} is not a plain relative folder inside the claim")
        return WeightsSource(WEIGHTS_KIND_VOLUME, claim=claim, sub_path=sub or None)
    raise ValueError(f"{value!r}: unknown scheme {scheme!r}; write {_FORMS}")
