"""zerotir.rollout"""
