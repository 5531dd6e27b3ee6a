"""The kubelet's resource-name and version rules for RegisterRequest."""

from __future__ import annotations

import pytest

from krakenplug.testing.names import is_extended_resource_name, register_problem


@pytest.mark.parametrize("name", [
    "vendor.com/gpu", "krakenplug.pcl.ac.cn/fake", "example.com/Resource_1.x", "a/b", "x.y/" + "n" * 63,
])
def test_extended_resource_names_accepted(name):
    assert is_extended_resource_name(name)


@pytest.mark.parametrize("name", [
    "gpu",                       # no domain: a native resource
    "kubernetes.io/gpu",         # reserved namespace
    "nvidia.kubernetes.io/gpu",  # also reserved
    "requests.vendor.com/gpu",   # clashes with quota names
    "Vendor.com/gpu",            # upper case in the DNS prefix
    "vendor.com/",               # empty name part
    "vendor.com/-gpu",           # must start alphanumeric
    "vendor.com/gpu/x",          # two slashes
    "/gpu",                      # empty prefix
    "x.y/" + "n" * 64,           # name part too long
    "a" * 245 + ".com/gpu",      # prefix too long once "requests." is added
])
def test_extended_resource_names_refused(name):
    assert not is_extended_resource_name(name)


def test_register_problem_names_the_bad_field():
    assert register_problem("v1beta1", "vendor.com/gpu") is None
    assert register_problem("v1", "vendor.com/gpu") == (
        'requested API version "v1" is not supported by kubelet. Supported version is "v1beta1"')
    assert register_problem("v1beta1", "gpu") == 'the ResourceName "gpu" is invalid'
