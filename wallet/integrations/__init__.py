"""Adapters that put the wallet in a gateway's path (docs/gateway.md).

`wallet.integrations.litellm` is the LiteLLM proxy's callback; it needs
`pip install 'compute-credit-wallet[litellm]'`. Nothing here is imported by the app.
"""
