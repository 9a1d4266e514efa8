"""zerotir.analysis"""
