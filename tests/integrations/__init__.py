"""The gateway adapters (wallet.integrations) against a fake wallet and a real LiteLLM proxy."""
