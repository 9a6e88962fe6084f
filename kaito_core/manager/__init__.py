"""The operator: wires the engine, both reconcilers, a provisioner plugin and the admission webhook.

Layer: above controllers, below the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kaito_core.manager.operator import Operator
from kaito_core.manager.settings import OperatorSettings, WebhookSettings

if TYPE_CHECKING:
    from kaito_core.manager.webhook_certs import WebhookCertManager, WebhookEndpoint

__all__ = ["Operator", "OperatorSettings", "WebhookCertManager", "WebhookEndpoint", "WebhookSettings"]

#: Loaded on first use (PEP 562): the certificate code pulls in ``cryptography`` (8 MiB resident),
#: which an operator run without its webhook (``--no-webhook``, cert-manager's files) never needs.
_LAZY = {"WebhookCertManager", "WebhookEndpoint"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kaito_core.manager import webhook_certs

        return getattr(webhook_certs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
