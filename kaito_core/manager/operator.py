"""The kaito-core operator: one engine Manager running both reconcilers and the webhook.

::

    operator = await Operator.create(OperatorSettings(provisioner="simulated"), kubeconfig="...")
    await operator.run()          # until SIGTERM, or leader loss (then it raises)

Embedders who want only one of the reconcilers call
``kaito_core.controllers.workspace.add_workspace_controller`` /
``kaito_core.controllers.machine.add_machine_controller`` on their own Manager.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from kaito_core.api import WEBHOOK_NAME, WEBHOOK_PATH, validating_webhook_configuration
from kaito_core.api.webhook import WebhookServer
from kaito_core.controllers.machine import MachineController, add_machine_controller
from kaito_core.controllers.workspace import add_workspace_controller
from kaito_core.engine import AlreadyExistsError, Controller, Manager
from kaito_core.manager.settings import OperatorSettings
from kaito_core.provisioning import Provisioner, load_provisioner
from kaito_core.provisioning.identity import discover_install_identity

if TYPE_CHECKING:  # the webhook's certificates (and cryptography, 8 MiB) load only when it is served
    from kaito_core.manager.webhook_certs import WebhookCertManager

__all__ = ["Operator"]

log = structlog.get_logger("kaito_core.manager")


async def _reload_when_changed(server: WebhookServer, interval: float = 30.0) -> None:
    """A mounted certificate (cert-manager's Secret): serve it again whenever the kubelet updates the files."""

    def contents() -> tuple[bytes, bytes]:
        return server.cert_file.read_bytes(), server.key_file.read_bytes()

    seen = contents()
    while True:
        await asyncio.sleep(interval)
        try:
            now = contents()
            if now != seen:
                server.reload_certificates()
                seen = now
                log.info("webhook certificate files changed; serving the new certificate")
        except (OSError, ValueError) as exc:  # a half-updated volume: look again next time
            log.warning("could not reload the webhook certificate", error=repr(exc))


class Operator:
    """Owns the Manager, the provisioner and the webhook; build with :meth:`create`."""

    def __init__(self, settings: OperatorSettings, manager: Manager, provisioner: Provisioner,
                 workspace: Controller, machine: MachineController):
        self.settings = settings
        self.manager = manager
        self.provisioner = provisioner
        self.workspace_controller = workspace
        self.machine_controller = machine
        self.webhook: WebhookServer | None = None
        self.certs: WebhookCertManager | None = None
        self._webhook_ready = asyncio.Event()
        if settings.webhook.enabled:
            manager.add_runnable(self._serve_webhook)
            manager.add_ready_check("webhook", self._webhook_ready.is_set)

    @classmethod
    async def create(cls, settings: OperatorSettings, *, kubeconfig: str | Path | None = None,
                     provisioner: Provisioner | None = None, manager: Manager | None = None) -> Operator:
        """Wire everything; ``provisioner``/``manager`` may be injected (tests, embedders)."""
        manager_settings = settings.manager.model_copy(deep=True)
        if manager_settings.leader_election.enabled:
            manager_settings.leader_election.lease_namespace = settings.namespace
        mgr = manager or await Manager.from_kubeconfig(kubeconfig, settings=manager_settings)
        plugin = provisioner or load_provisioner(settings.provisioner, settings.provisioner_settings)
        install = await discover_install_identity(mgr.client, settings.namespace, cluster_id=settings.cluster_id)
        # Both controllers share one cache (one informer per kind); the Machine controller's selector
        # filters its events only, so the order of these two calls does not matter.
        machine = add_machine_controller(mgr, plugin, settings.machine, namespace=settings.namespace,
                                         install=install)
        workspace = add_workspace_controller(mgr, settings.workspace, provisioner=settings.provisioner,
                                             install=install)
        log.info("operator wired", provisioner=settings.provisioner, namespace=settings.namespace,
                 install=install.value, cluster_id=install.cluster_id,
                 leader_election=manager_settings.leader_election.enabled, webhook=settings.webhook.enabled)
        return cls(settings, mgr, plugin, workspace, machine)

    async def run(self) -> None:
        """Run until stopped; raises when leadership is lost (the process should exit non-zero).

        The API client is closed on the way out either way."""
        try:
            await self.manager.run()
        finally:
            await self.manager.client.close()

    def stop(self) -> None:
        self.manager.stop()

    # -- webhook

    async def _serve_webhook(self) -> None:
        from kaito_core.manager.webhook_certs import WebhookCertManager, WebhookEndpoint

        hook = self.settings.webhook
        if hook.cert_dir is not None:  # cert-manager (or an operator-supplied) certificate
            cert_dir = hook.cert_dir
        else:
            cert_dir = Path(tempfile.mkdtemp(prefix="kaito-webhook-"))
            endpoint = WebhookEndpoint(service=hook.service, namespace=self.settings.namespace,
                                       host=None if hook.service else hook.host)
            self.certs = WebhookCertManager(
                self.manager.client, secret_name=hook.secret_name, namespace=self.settings.namespace,
                cert_dir=cert_dir, endpoint=endpoint, configuration_name=hook.configuration_name,
            )
            # A local run registers the configuration itself below, with the CA in it.
            await self.certs.ensure(patch_ca_bundle=not hook.register_configuration)
        server = WebhookServer(cert_dir / "tls.crt", cert_dir / "tls.key", host=hook.bind_address, port=hook.port,
                               default_runtime=self.settings.workspace.default_runtime)
        await server.start()
        self.webhook = server
        try:
            if hook.register_configuration:
                await self._register(server, (cert_dir / "ca.crt").read_bytes())
            self._webhook_ready.set()
            if self.certs is not None:
                await self.certs.run(on_change=server.reload_certificates)
            else:
                await _reload_when_changed(server)
        finally:
            await server.stop()

    async def _register(self, server: WebhookServer, ca_pem: bytes) -> None:
        """Local runs: point a ValidatingWebhookConfiguration at this process's URL."""
        from kaito_core.manager.webhook_certs import VALIDATING_WEBHOOK_CONFIGURATION

        hook = self.settings.webhook
        host = f"[{hook.host}]" if ":" in hook.host else hook.host
        url = f"https://{host}:{server.port}{WEBHOOK_PATH}"
        body: dict[str, Any] = validating_webhook_configuration(
            ca_pem, url=url, name=hook.configuration_name or WEBHOOK_NAME)
        try:
            await self.manager.client.create(body, kind=VALIDATING_WEBHOOK_CONFIGURATION)
        except AlreadyExistsError:
            current = await self.manager.client.get(VALIDATING_WEBHOOK_CONFIGURATION, body["metadata"]["name"])
            await self.manager.client.update({**current, "webhooks": body["webhooks"]},
                                             kind=VALIDATING_WEBHOOK_CONFIGURATION)
        log.info("admission webhook registered", url=url)
