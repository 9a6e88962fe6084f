"""The karpenter tests reuse the Machine controller test helpers of tests/integration (on pytest's
``pythonpath``, pyproject.toml)."""
