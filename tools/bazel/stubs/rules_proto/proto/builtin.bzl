"""Holds the built-in ProtoInfo so defs.bzl can re-export it under its own name."""

PROTO_INFO = ProtoInfo
