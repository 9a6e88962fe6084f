"""The operator: wires the engine, both reconcilers, a provisioner plugin and the admission webhook.

Layer: above controllers, below the CLI.
"""

from kaito_core.manager.operator import Operator
from kaito_core.manager.settings import OperatorSettings, WebhookSettings
from kaito_core.manager.webhook_certs import WebhookCertManager, WebhookEndpoint

__all__ = ["Operator", "OperatorSettings", "WebhookCertManager", "WebhookEndpoint", "WebhookSettings"]
