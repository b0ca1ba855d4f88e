"""The PyPI `kubernetes` client through kas's Kubernetes API proxy.

Environment: KUBECONFIG (pointing at the proxy), NAMESPACE.
Exits non-zero on the first failed check.
"""

import os

from kubernetes import client, config, watch

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
namespace = os.environ["NAMESPACE"]
core = client.CoreV1Api()

names = [ns.metadata.name for ns in core.list_namespace().items]
assert namespace in names, names

body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"k": "v"})
core.create_namespaced_config_map(namespace, body)
read = core.read_namespaced_config_map("from-python", namespace)
assert read.data == {"k": "v"}, read.data
core.patch_namespaced_config_map("from-python", namespace, {"data": {"k": "w"}})
assert core.read_namespaced_config_map("from-python", namespace).data["k"] == "w"

events = []
stream = watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=5)
for event in stream:
    events.append((event["type"], event["object"].metadata.name))
    if ("ADDED", "from-python") in events:
        break
assert ("ADDED", "from-python") in events, events

core.delete_namespaced_config_map("from-python", namespace)
print("all kubernetes client checks passed")
