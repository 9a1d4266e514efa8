"""zerotir.reward"""
