"""telepipe.sources"""
