from __future__ import annotations

import pytest

from krakenplug.plugin import naming


@pytest.mark.parametrize(("resource", "taken", "expected"), [
    ("krakenplug.pcl.ac.cn/fake", set(), "krakenplug-fake.sock"),
    ("nvidia.com/gpu", set(), "krakenplug-gpu.sock"),
    ("baidu.com/xpu-vf", set(), "krakenplug-xpu-vf.sock"),
    ("example.com/a b:c", set(), "krakenplug-a_b_c.sock"),
], ids=["fake", "nvidia", "dash-kept", "unsafe-characters-replaced"])
def test_socket_name_comes_from_the_part_after_the_slash(resource, taken, expected):
    assert naming.socket_name(resource, taken=taken) == expected


def test_colliding_names_get_a_stable_hash():
    first = naming.socket_name("a.example.com/gpu")
    second = naming.socket_name("b.example.com/gpu", taken={first})
    assert first == "krakenplug-gpu.sock"
    assert second.startswith("krakenplug-gpu-") and second.endswith(".sock") and second != first
    assert second == naming.socket_name("b.example.com/gpu", taken={first})
    assert naming.socket_name("c.example.com/gpu", taken={first}) != second


def test_long_names_are_shortened_and_stay_distinct():
    one = naming.socket_name("example.com/" + "a" * 60 + "1")
    two = naming.socket_name("example.com/" + "a" * 60 + "2")
    assert one != two and len(one) <= 65 and len(two) <= 65


@pytest.mark.parametrize(("resource", "problem"), [
    ("example.com/gpu", None),
    ("krakenplug.pcl.ac.cn/fake", None),
    ("gpu", "domain prefix"),
    ("kubernetes.io/gpu", "reserved"),
    ("foo.kubernetes.io/gpu", "reserved"),
    ("requests.example.com/gpu", "requests."),
    ("Example.com/gpu", "DNS subdomain"),
    ("example.com/-gpu", "part after '/'"),
    ("example.com/" + "g" * 64, "part after '/'"),
    ("example.com/a/b", "part after '/'"),
], ids=["plain", "dotted-domain", "no-domain", "kubernetes-io", "sub-kubernetes-io", "requests-prefix",
        "upper-case-domain", "leading-dash", "name-too-long", "two-slashes"])
def test_resource_names_the_kubelet_would_refuse_are_explained(resource, problem):
    found = naming.resource_name_problem(resource)
    assert (found is None) if problem is None else (problem in found)
