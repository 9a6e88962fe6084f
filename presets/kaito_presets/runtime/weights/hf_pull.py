"""Pull a Hugging Face repository at a revision with the real ``huggingface_hub`` client."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

from .common import DEFAULT_ATTEMPTS, HF_IGNORE_PATTERNS, WeightsError, _scrub
from .store import _prepare, _with_retries, _write_marker, check_model_dir, read_marker

log = logging.getLogger("kaito.weights")


def _hf_status(exc: BaseException) -> int | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        response = getattr(cur, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        cur = cur.__cause__ or cur.__context__
    return None


def _hf_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _hf_error(exc: BaseException, repo: str, revision: str, endpoint: str, token: str | None) -> WeightsError:
    from huggingface_hub import errors

    where = f"{repo}@{revision}"
    chain = list(_hf_chain(exc))
    status = _hf_status(exc)
    if any(isinstance(e, errors.RevisionNotFoundError) for e in chain):
        return WeightsError(
            f"revision {revision} of Hugging Face repository {repo} not found on {endpoint} (404, Revision Not Found): "
            "pin an existing commit of the repository"
        )
    if status in (401, 403) or any(isinstance(e, errors.GatedRepoError) for e in chain):
        if token:
            return WeightsError(
                f"Hugging Face refused the token for {where} ({status or 401}): "
                "check the Secret named in presetOptions.modelAccessSecret (its HF_TOKEN must have access to the repo)"
            )
        return WeightsError(
            f"Hugging Face requires a token for {where} ({status or 401}) and none was given: "
            "set presetOptions.modelAccessSecret to a Secret holding HF_TOKEN"
        )
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain) or status == 404:
        return WeightsError(f"Hugging Face repository {repo} (revision {revision}) not found on {endpoint} (404)")
    transient_names = ("ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "RemoteProtocolError")
    if (status is not None and (status >= 500 or status == 429)) or any(
        type(e).__name__ in transient_names or isinstance(e, ConnectionError | TimeoutError) for e in chain
    ):
        return WeightsError(
            f"Hugging Face endpoint {endpoint} unavailable for {where} ({status or type(chain[-1]).__name__})",
            transient=True,
        )
    text = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, [token])
    return WeightsError(f"downloading {where} from {endpoint} failed: {text[:300]}")


def _pull_hf_once(repo: str, revision: str, dest: Path, token: str | None, endpoint: str) -> str:
    from huggingface_hub import snapshot_download

    started = time.monotonic()
    try:
        snapshot_download(
            repo,
            revision=revision,
            local_dir=str(dest),
            cache_dir=str(dest / ".cache" / "huggingface" / "hub"),
            token=token,
            ignore_patterns=HF_IGNORE_PATTERNS,
        )
    except Exception as exc:
        raise _hf_error(exc, repo, revision, endpoint, token) from None
    files = [p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.relative_to(dest).parts]
    commit = revision
    for meta in sorted((dest / ".cache" / "huggingface" / "download").rglob("*.metadata")):
        first = meta.read_text().split("\n", 1)[0].strip()  # huggingface_hub writes: commit, etag, timestamp
        if re.fullmatch(r"[0-9a-f]{40}", first):
            commit = first
            break
    log.info(
        "pulled hf://%s@%s (commit %s) into %s: %d files, %d bytes in %.1fs",
        repo, revision, commit, dest, len(files), sum(p.stat().st_size for p in files), time.monotonic() - started,
    )  # fmt: skip
    return commit


def pull_hf(
    repo: str,
    revision: str,
    dest: str | os.PathLike[str],
    *,
    token: str | None = None,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = 2.0,
) -> str:
    """``snapshot_download`` of ``repo`` at ``revision`` into ``dest`` (skipping ``original/**``, ``metal/**``)."""
    from huggingface_hub import constants

    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise WeightsError(f"invalid Hugging Face repository {repo!r}: expected ORG/NAME")
    if not revision:
        raise WeightsError(f"no revision given for Hugging Face repository {repo}: pin a commit")
    out = Path(dest)
    source = f"hf://{repo}@{revision}"
    if _prepare(out, source):
        return str((read_marker(out) or {}).get("digest") or revision)
    if constants.HF_HUB_OFFLINE:
        raise WeightsError(
            f"cannot download {repo}@{revision}: HF_HUB_OFFLINE is set in this container; "
            "the weights init container must be allowed to reach the Hugging Face endpoint"
        )
    endpoint = constants.ENDPOINT
    digest = _with_retries(
        lambda: _pull_hf_once(repo, revision, out, token, endpoint), attempts, backoff, f"pulling {source}"
    )
    check_model_dir(out, source)
    _write_marker(out, source, digest)
    return digest
