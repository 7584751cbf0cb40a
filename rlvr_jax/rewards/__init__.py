"""Host-side reward verifiers (no JAX): math answers, and the worker pool that runs them."""
