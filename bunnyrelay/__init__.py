"""What bunny and relay share: the generated contract, telemetry bootstrap and config parsing.

bunny and relay never import each other; everything both need lives here.
"""
