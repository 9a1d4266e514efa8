"""zerotir.distributed"""
