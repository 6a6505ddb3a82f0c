"""HyperSDK secrets service: the SecretManager port backed by Vault/OpenBao."""
