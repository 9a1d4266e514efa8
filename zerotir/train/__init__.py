"""zerotir.train"""
