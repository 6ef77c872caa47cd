"""Tests of relay.kinds."""
