"""Multi-turn environments: the interface (base.py), tool-call actions (actions.py), worker
processes with a per-step timeout (pool.py) and the Ecom-RLVE environments (ecom/)."""
