"""The karpenter tests reuse the Machine controller test helpers of tests/integration."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
