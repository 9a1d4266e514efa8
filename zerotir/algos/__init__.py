"""zerotir.algos"""
