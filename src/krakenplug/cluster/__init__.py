"""The agent's Kubernetes API access, one client module per concern, shared by every component.

* :mod:`.config` finds the cluster (``--kubeconfig``, ``KUBECONFIG``, in-cluster, ``~/.kube/config``);
* :mod:`.nodes` reads, patches and watches this node's labels;
* :mod:`.events` posts Events on this node.

The kubelet's PodResources API is a node-local gRPC service, not the API server: see
:mod:`krakenplug.kubelet_podresources`.
"""
