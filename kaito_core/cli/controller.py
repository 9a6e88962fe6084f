"""``kaito controller``: the operator against the current kubeconfig or in-cluster config.

What the container image runs. Flags override the ``KAITO_*`` environment
(see :class:`~kaito_core.manager.OperatorSettings`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kaito_core.engine import LeaderElectionLostError, configure_logging
from kaito_core.manager import Operator, OperatorSettings
from kaito_core.provisioning import UnknownProvisionerError

__all__ = ["add_parser", "settings_from_args"]


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is read as JSON when it is JSON (``["a","b"]``, ``0.5``), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    """Environment first (pydantic-settings), then every flag that was given."""
    settings = OperatorSettings()
    updates: dict[str, Any] = {}
    if args.provisioner is not None:
        updates["provisioner"] = args.provisioner
    if args.namespace is not None:
        updates["namespace"] = args.namespace
    if args.log_format is not None:
        updates["log_format"] = args.log_format
    if args.log_level is not None:
        updates["log_level"] = args.log_level
    if args.provisioner_setting:
        updates["provisioner_settings"] = {**settings.provisioner_settings, **dict(args.provisioner_setting)}
    manager = settings.manager.model_copy(deep=True)
    if args.leader_elect is not None:
        manager.leader_election.enabled = args.leader_elect
    if args.http_port is not None:
        manager.http_port = args.http_port
    webhook = settings.webhook.model_copy()
    for flag, field in (("webhook_port", "port"), ("webhook_service", "service"), ("webhook_secret", "secret_name"),
                        ("webhook_configuration", "configuration_name"), ("webhook_cert_dir", "cert_dir")):
        value = getattr(args, flag)
        if value is not None:
            setattr(webhook, field, value)
    if args.no_webhook:
        webhook.enabled = False
    return settings.model_copy(update={**updates, "manager": manager, "webhook": webhook})


async def _run(settings: OperatorSettings, kubeconfig: str | None) -> int:
    operator = await Operator.create(settings, kubeconfig=kubeconfig)
    try:
        await operator.run()
    except LeaderElectionLostError as exc:
        print(f"kaito controller: {exc}; exiting so a standby takes over", file=sys.stderr)
        return 1
    return 0


def _cmd_controller(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"kaito controller: invalid settings: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_format == "json")
    try:
        return asyncio.run(_run(settings, args.kubeconfig))
    except UnknownProvisionerError as exc:
        print(f"kaito controller: {exc}", file=sys.stderr)
        return 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("controller", help="run the operator against a cluster (kubeconfig or in-cluster)")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--provisioner", help="provisioner plugin: simulated, byo, aks, karpenter, ... [KAITO_PROVISIONER]")
    p.add_argument("--provisioner-setting", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="a setting of the provisioner plugin (repeatable)")
    p.add_argument("--namespace", help="the operator's namespace (Lease, webhook Secret) [KAITO_NAMESPACE]")
    p.add_argument("--leader-elect", type=_bool, metavar="true|false", help="Lease-based leader election")
    p.add_argument("--http-port", type=int, help="port of /healthz, /readyz and /metrics")
    p.add_argument("--webhook-port", type=int, help="HTTPS port of the admission webhook")
    p.add_argument("--webhook-service", help="the Service the apiserver calls the webhook through")
    p.add_argument("--webhook-secret", help="Secret holding the self-signed webhook certificate")
    p.add_argument("--webhook-configuration", help="ValidatingWebhookConfiguration whose caBundle to keep current")
    p.add_argument("--webhook-cert-dir", type=Path, help="use these certificates (cert-manager) instead")
    p.add_argument("--no-webhook", action="store_true", help="do not serve the admission webhook")
    p.add_argument("--log-format", choices=["json", "console"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=_cmd_controller)
