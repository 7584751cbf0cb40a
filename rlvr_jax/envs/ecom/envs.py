"""The Ecom-RLVE environments by name: `make_env("PD")` and ENV_NAMES."""

from __future__ import annotations

from rlvr_jax.envs.ecom import episode, service_envs, shop_envs

_CLASSES = {
    "PD": shop_envs.ProductDiscovery,
    "SUB": shop_envs.Substitution,
    "CART": shop_envs.CartBuilding,
    "RETURN": service_envs.Returns,
    "STATUS": service_envs.OrderStatus,
    "POLICY": service_envs.PolicyQA,
}
ENV_NAMES = tuple(_CLASSES)


def make_env(name: str, catalog_seed: int = 0) -> episode.EcomEnv:
    """A fresh environment (the catalog and its indexes are shared within the process)."""
    if name not in _CLASSES:
        raise ValueError(f"unknown environment {name!r}; known: {', '.join(ENV_NAMES)}")
    return _CLASSES[name](catalog_seed)
