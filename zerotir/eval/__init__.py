"""zerotir.eval"""
