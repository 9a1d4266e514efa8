"""zerotir.sandbox"""
