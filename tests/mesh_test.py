"""Mesh construction, logical-axis rules and parameter shardings."""

import jax
import pytest
from jax.sharding import PartitionSpec as P

from rlvr_jax import mesh as mesh_lib
from rlvr_jax.models import config as config_lib
from rlvr_jax.models import params as params_lib


def test_make_mesh_resolves_minus_one_and_rejects_bad_shapes():
    mesh = mesh_lib.make_mesh((2, -1, 1))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert mesh_lib.batch_size_of(mesh) == 8
    with pytest.raises(ValueError, match="at most one -1"):
        mesh_lib.make_mesh((-1, -1, 1))
    with pytest.raises(ValueError, match="needs 6 devices"):
        mesh_lib.make_mesh((3, 2, 1))
    with pytest.raises(ValueError, match="3 entries"):
        mesh_lib.make_mesh((8,))


def test_logical_rules_map_and_detect_collisions():
    assert mesh_lib.logical_to_spec(P("embed", "heads", "head_dim")) == P("fsdp", "tensor", None)
    assert mesh_lib.logical_to_spec(P("mlp", "embed")) == P("tensor", "fsdp")
    with pytest.raises(ValueError, match="both map to mesh axis 'tensor'"):
        mesh_lib.logical_to_spec(P("heads", "mlp"))
    with pytest.raises(ValueError, match="has no rule"):
        mesh_lib.logical_to_spec(P("nonsense"))


def test_param_shardings_place_a_tensor_parallel_model():
    cfg = config_lib.get_preset("tiny")
    mesh = mesh_lib.make_mesh((2, 2, 2))
    shardings = mesh_lib.param_shardings(mesh, params_lib.param_axes(cfg))
    params = jax.device_put(params_lib.init_params(cfg, jax.random.key(0)), shardings)
    q = params.layers[0].q  # [D, H, K]: D over fsdp (2), H over tensor (2)
    assert q.sharding.spec == P("fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (
        cfg.d_model // 2,
        cfg.num_heads // 2,
        cfg.head_dim,
    )
    assert params.layers[0].gate.sharding.spec == P("fsdp", "tensor")
