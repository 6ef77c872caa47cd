"""The local lab: real parts to run bunny and relay against on one machine.

Nothing here is imported by bunny or relay themselves; the demo and the tests use it.
"""
