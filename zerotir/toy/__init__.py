"""zerotir.toy"""
