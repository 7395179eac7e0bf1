"""telepipe.sinks"""
