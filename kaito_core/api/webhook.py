"""The validating admission webhook for Workspaces (AdmissionReview v1 over HTTPS).

:func:`admission_review` is the pure part: an AdmissionReview request in, the
response out, using the same :func:`~kaito_core.api.validation.validate_workspace`
as the reconciler (with ``oldObject`` on UPDATE for the immutable fields).
:class:`WebhookServer` serves it with aiohttp on ``/validate-workspace``; the
manager hosts it and rotates its certificate (:meth:`WebhookServer.reload_certificates`).
:func:`validating_webhook_configuration` builds the object that registers it.

Never blocked: DELETE, objects being deleted (so finalizers can always be removed),
and updates that leave resource/inference/tuning and the annotations unchanged
(status, labels, finalizers), so a catalog change can never wedge an existing Workspace.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import structlog
from aiohttp import web
from kaito_presets import Catalog

from kaito_core.api.constants import GROUP, WEBHOOK_NAME, WEBHOOK_PATH, WORKSPACE_KIND, WORKSPACE_PLURAL
from kaito_core.api.errors import FieldError
from kaito_core.api.validation import validate_workspace

__all__ = [
    "MAX_JSON_DEPTH",
    "WebhookServer",
    "admission_review",
    "json_depth",
    "make_webhook_app",
    "validating_webhook_configuration",
]

# structlog directly: the API layer needs no engine (the manager configures the rendering).
log = structlog.get_logger("kaito_core.api.webhook")

_ADMISSION_API = "admission.k8s.io/v1"

MAX_JSON_DEPTH = 100
"""Deepest nesting of objects and arrays an AdmissionReview may have. A real one is about 20 deep (the
review, the Workspace, a pod template's affinity terms); anything deeper is refused with a 400 before
it is parsed, so a hostile body cannot make the parser or the validator recurse until a RecursionError."""

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str, stop_above: int | None = None) -> int:
    """How deeply objects and arrays nest in the JSON ``text`` (without parsing it; no recursion).

    With ``stop_above`` it returns as soon as the depth passes it (a hostile body costs no more)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if stop_above is not None and depth > stop_above:
                break
        else:
            depth -= 1
    return deepest


def _response(uid: str, allowed: bool, errors: list[FieldError] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if errors:
        # Only a message: the apiserver reports it as 'admission webhook "<name>" denied the
        # request: <message>'. (A reason Invalid with causes would make kubectl print
        # 'The Workspace "" is invalid' and hide which webhook spoke.)
        response["status"] = {"message": "; ".join(str(error) for error in errors)}
    return {"apiVersion": _ADMISSION_API, "kind": "AdmissionReview", "response": response}


def _watched(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return obj.get("resource"), obj.get("inference"), obj.get("tuning"), annotations


def admission_review(review: Any, *, catalog: Catalog | None = None,
                     default_runtime: str | None = None) -> dict[str, Any]:
    """Answer one AdmissionReview v1 request (raises ``ValueError`` if it is not one)."""
    request = review.get("request") if isinstance(review, Mapping) else None
    if not isinstance(request, Mapping) or not isinstance(request.get("uid"), str):
        raise ValueError("not an AdmissionReview request (request.uid missing)")
    uid: str = request["uid"]
    kind = request.get("kind") or {}
    if (kind.get("group"), kind.get("kind")) != (GROUP, WORKSPACE_KIND):
        return _response(uid, True)
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE"):
        return _response(uid, True)
    obj = request.get("object")
    old = request.get("oldObject") if operation == "UPDATE" else None
    if isinstance(obj, Mapping):
        metadata = obj.get("metadata")
        if isinstance(metadata, Mapping) and metadata.get("deletionTimestamp"):
            return _response(uid, True)
        if isinstance(old, Mapping) and _watched(obj) == _watched(old):
            return _response(uid, True)
    errors = validate_workspace(obj, old, catalog=catalog, default_runtime=default_runtime)
    if errors:
        metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
        name = metadata.get("name") if isinstance(metadata, Mapping) else None
        log.info("admission denied", operation=operation, namespace=request.get("namespace"), name=name,
                 errors="; ".join(map(str, errors)))
    return _response(uid, not errors, errors)


def make_webhook_app(catalog: Catalog | None = None, default_runtime: str | None = None) -> web.Application:
    """An aiohttp app serving ``POST /validate-workspace`` (and ``GET /healthz``).

    ``default_runtime``: the operator's (``WorkspaceSettings.default_runtime``), so admission judges
    runtime-specific fields as the reconciler will."""

    async def validate(request: web.Request) -> web.Response:
        try:
            text = await request.text()
            if json_depth(text, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
            review = json.loads(text)
            answer = admission_review(review, catalog=catalog, default_runtime=default_runtime)
        except ValueError as exc:  # includes JSON decode errors
            return web.json_response({"error": f"bad AdmissionReview: {exc}"}, status=400)
        except RecursionError:  # not reachable within MAX_JSON_DEPTH; kept so it can never be a 500
            return web.json_response({"error": "bad AdmissionReview: nested too deeply"}, status=400)
        return web.json_response(answer)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post(WEBHOOK_PATH, validate)
    app.router.add_get("/healthz", healthz)
    return app


class WebhookServer:
    """The admission webhook over TLS. ``port=0`` picks a free port (see :attr:`port`).

    ::

        async with WebhookServer(cert, key, host="127.0.0.1", port=0) as server:
            server.url  # https://127.0.0.1:PORT/validate-workspace
    """

    def __init__(self, cert_file: Path | str, key_file: Path | str, *, host: str = "0.0.0.0",
                 port: int = 9443, catalog: Catalog | None = None, default_runtime: str | None = None):
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.host = host
        self._port = port
        self._catalog = catalog
        self._default_runtime = default_runtime
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ssl.load_cert_chain(self.cert_file, self.key_file)
        self._runner: web.AppRunner | None = None

    def reload_certificates(self) -> None:
        """Load the certificate and key files again; new connections use them (no restart)."""
        self._ssl.load_cert_chain(self.cert_file, self.key_file)

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(make_webhook_app(self._catalog, self._default_runtime), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        addresses = runner.addresses
        if addresses:
            self._port = int(addresses[0][1])
        log.info("admission webhook serving", url=self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self._port}{WEBHOOK_PATH}"


def validating_webhook_configuration(
    ca_bundle: bytes | str,
    *,
    url: str | None = None,
    service_name: str | None = None,
    service_namespace: str | None = None,
    service_port: int = 443,
    name: str = "kaito-core-workspace-validation",
    failure_policy: Literal["Fail", "Ignore"] = "Fail",
    timeout_seconds: int = 10,
    namespace_selector: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends Workspace CREATE/UPDATE to the webhook.

    Give either ``url`` (e.g. ``https://127.0.0.1:9443/validate-workspace``) or
    ``service_name`` + ``service_namespace``; ``ca_bundle`` is the PEM of the CA that
    signed the serving certificate. ``namespace_selector`` limits it to some namespaces.
    """
    if (url is None) == (service_name is None):
        raise ValueError("give either url or service_name (with service_namespace)")
    pem = ca_bundle.encode() if isinstance(ca_bundle, str) else ca_bundle
    client_config: dict[str, Any] = {"caBundle": base64.b64encode(pem).decode()}
    if url is not None:
        client_config["url"] = url
    else:
        if not service_namespace:
            raise ValueError("service_namespace is required with service_name")
        client_config["service"] = {"name": service_name, "namespace": service_namespace,
                                    "path": WEBHOOK_PATH, "port": service_port}
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": [{
            "apiGroups": [GROUP],
            "apiVersions": ["*"],
            "operations": ["CREATE", "UPDATE"],
            "resources": [WORKSPACE_PLURAL],
            "scope": "Namespaced",
        }],
        "failurePolicy": failure_policy,
        "sideEffects": "None",
        "matchPolicy": "Equivalent",
        "timeoutSeconds": timeout_seconds,
    }
    if namespace_selector is not None:
        webhook["namespaceSelector"] = dict(namespace_selector)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }
