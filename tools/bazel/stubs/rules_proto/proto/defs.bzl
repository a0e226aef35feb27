"""Offline stand-in for rules_proto: forwards to Bazel 4.2.3's built-in proto rules."""

load(":builtin.bzl", _PROTO_INFO = "PROTO_INFO")

def proto_library(**attrs):
    native.proto_library(**attrs)

def proto_lang_toolchain(**attrs):
    native.proto_lang_toolchain(**attrs)

ProtoInfo = _PROTO_INFO
