"""A small OCI distribution client (plain ``requests``): auth challenges, manifests, blobs, uploads."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from ..oci import (
    ImageRef,
    credentials_for,
)
from .common import WeightsError

log = logging.getLogger("kaito.weights")


def _header_params(challenge: str) -> dict[str, str]:
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', challenge)}


class _Registry:
    """Plain HTTP to an OCI distribution registry: Basic or Bearer-token auth from a docker config."""

    def __init__(self, ref: ImageRef, docker_config: dict[str, Any], insecure: bool, timeout: float = 60.0) -> None:
        import requests

        self.ref = ref
        self.scheme = "http" if insecure else "https"
        self.base = f"{self.scheme}://{ref.registry}/v2/{ref.repository}"
        self.creds = credentials_for(docker_config, ref.registry)
        self.session = requests.Session()
        self.session.trust_env = False  # never pick credentials from ~/.netrc behind our back
        self.timeout = timeout
        self._authorization: str | None = None
        self.requests = 0

    @property
    def secrets(self) -> list[str | None]:
        return [self.creds[1] if self.creds else None]

    def _authenticate(self, resp: Any, actions: str) -> bool:
        """Answer a 401 challenge once; False when there is nothing more to try."""
        import requests

        challenge = resp.headers.get("Www-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if not self.creds or self._authorization:
                return False
            raw = f"{self.creds[0]}:{self.creds[1]}".encode()
            self._authorization = "Basic " + base64.b64encode(raw).decode()
            return True
        if scheme == "bearer":
            if self._authorization and self._authorization.startswith("Bearer "):
                return False
            params = _header_params(challenge)
            realm = params.get("realm")
            if not realm:
                return False
            query = {"service": params.get("service", self.ref.registry)}
            query["scope"] = params.get("scope") or f"repository:{self.ref.repository}:{actions}"
            try:
                tok = self.session.get(realm, params=query, auth=self.creds, timeout=self.timeout)
            except requests.RequestException as exc:
                raise WeightsError(f"token service of {self.ref.registry} unreachable: {exc}", transient=True) from exc
            self.requests += 1
            if tok.status_code in (401, 403):
                return False
            if tok.status_code >= 500 or tok.status_code == 429:
                raise WeightsError(f"token service of {self.ref.registry} answered {tok.status_code}", transient=True)
            try:
                body = tok.json()
                token = body.get("token") or body.get("access_token")
            except ValueError:
                token = None
            if not token:
                return False
            self._authorization = f"Bearer {token}"
            return True
        return False

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        reopen: Callable[[], Any] | None = None,
    ) -> Any:
        """One request with auth; returns the response or raises a WeightsError for 401/403, 5xx, 429."""
        import requests

        if not url.startswith("http"):
            url = urljoin(f"{self.scheme}://{self.ref.registry}", url)
        for _ in range(3):
            hdrs = dict(headers or {})
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            try:
                resp = self.session.request(
                    method, url, headers=hdrs, data=data, stream=stream, timeout=self.timeout, allow_redirects=True
                )
            except requests.RequestException as exc:
                reason = type(exc).__name__
                raise WeightsError(
                    f"{what}: registry {self.ref.registry} unreachable ({reason})", transient=True
                ) from exc
            self.requests += 1
            log.debug("%s %s -> %s", method, url.split("?", 1)[0], resp.status_code)
            if resp.status_code == 401 and self._authenticate(resp, actions):
                if reopen is not None:
                    data = reopen()
                continue
            break
        if resp.status_code in (401, 403):
            if self.creds:
                hint = "check the registry credentials in the mounted secret (--docker-config)"
                problem = f"refused the credentials for {self.ref.registry}"
            else:
                hint = "mount an image pull secret for it (--docker-config)"
                problem = f"requires credentials and none were given for {self.ref.registry}"
            raise WeightsError(f"{what}: the registry {problem} (HTTP {resp.status_code}): {hint}")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise WeightsError(f"{what}: registry answered HTTP {resp.status_code}", transient=True)
        return resp


def _registry_error_code(resp: Any) -> str:
    try:
        errors = resp.json().get("errors") or []
        return ", ".join(str(e.get("message") or e.get("code")).lower() for e in errors if isinstance(e, dict))
    except ValueError:
        return ""
