"""Ecom-RLVE: multi-turn, tool-using e-commerce environments with adaptive difficulty.

envs.make_env(name) builds one (names in envs.ENV_NAMES); experts.py has a scripted expert per
environment and a random baseline; difficulty.py has theta(d), the RLVE controller and the
curriculum; rewards.py the reward formulas. See docs/ecom_rlve.md.
"""
