"""python-gitlab (library and `gitlab` CLI) against a running kas.

Environment: KAS_URL, KAS_TOKEN (root), KAS_CA (CA bundle), WORK_DIR.
Exits non-zero on the first failed check.
"""

import json
import os
import subprocess
import sys

import gitlab

url, token, ca, work = (os.environ[k] for k in ("KAS_URL", "KAS_TOKEN", "KAS_CA", "WORK_DIR"))

gl = gitlab.Gitlab(url, private_token=token, ssl_verify=ca)
gl.auth()
assert gl.user.username == "root", gl.user

project = gl.projects.create({"name": "python-client"})
assert project.path_with_namespace == "root/python-client", project.path_with_namespace

agent = project.cluster_agents.create({"name": "py-agent"})
assert agent.name == "py-agent"
assert agent.config_project["id"] == project.id

listed = project.cluster_agents.list(get_all=True)
assert [a.name for a in listed] == ["py-agent"], listed
fetched = project.cluster_agents.get(agent.id)
assert fetched.id == agent.id and fetched.created_by_user_id == gl.user.id

try:
    project.cluster_agents.create({"name": "Not_Valid"})
    raise AssertionError("an invalid name was accepted")
except gitlab.exceptions.GitlabCreateError as error:
    assert error.response_code == 400, error
    assert "lowercase" in str(error.error_message), error.error_message

# Tokens have no manager in python-gitlab: its raw HTTP helpers.
tokens_path = f"/projects/{project.id}/cluster_agents/{agent.id}/tokens"
created = gl.http_post(tokens_path, post_data={"name": "py-token", "description": "from python"})
assert created["token"].startswith("glagent-") and len(created["token"]) == 58, created
assert created["status"] == "active"
listed_tokens = gl.http_list(tokens_path, get_all=True)
assert [t["id"] for t in listed_tokens] == [created["id"]], listed_tokens
one = gl.http_get(f"{tokens_path}/{created['id']}")
assert one["name"] == "py-token" and "last_used_at" in one and "token" not in one, one
gl.http_delete(f"{tokens_path}/{created['id']}")
try:
    gl.http_get(f"{tokens_path}/{created['id']}")
    raise AssertionError("a revoked token is still readable")
except gitlab.exceptions.GitlabHttpError as error:
    assert error.response_code == 404, error
assert gl.http_list(tokens_path, get_all=True) == []

# The `gitlab` CLI from the same package, with a config file.
config = os.path.join(work, "python-gitlab.cfg")
with open(config, "w") as f:
    f.write(
        "[global]\ndefault = kas\nssl_verify = {ca}\n\n[kas]\nurl = {url}\nprivate_token = {token}\napi_version = 4\n".format(
            ca=ca, url=url, token=token
        )
    )
cli = [os.path.join(os.path.dirname(sys.executable), "gitlab"), "-c", config, "-o", "json"]


def run(*args):
    result = subprocess.run(cli + list(args), capture_output=True, text=True)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return json.loads(result.stdout) if result.stdout.strip() else None


made = run("project-cluster-agent", "create", "--project-id", str(project.id), "--name", "cli-agent")
assert made["name"] == "cli-agent", made
names = sorted(a["name"] for a in run("project-cluster-agent", "list", "--project-id", str(project.id)))
assert names == ["cli-agent", "py-agent"], names
got = run("project-cluster-agent", "get", "--project-id", str(project.id), "--id", str(made["id"]))
assert got["id"] == made["id"]
run("project-cluster-agent", "delete", "--project-id", str(project.id), "--id", str(made["id"]))

# Environments through python-gitlab's own manager.
production = project.environments.create({"name": "production", "external_url": "https://app.example.com"})
assert (production.slug, production.tier, production.state) == ("production", "production", "available"), production.attributes
assert "cluster_agent" not in production.attributes, production.attributes
review = project.environments.create(
    {
        "name": "review/feature-x",
        "cluster_agent_id": agent.id,
        "kubernetes_namespace": "review-x",
        "flux_resource_path": "helm.toolkit.fluxcd.io/v2/namespaces/review-x/helmreleases/app",
    }
)
assert review.tier == "development" and review.slug.startswith("review-feature-x-"), review.attributes
assert review.cluster_agent["id"] == agent.id and review.kubernetes_namespace == "review-x", review.attributes
assert review.flux_resource_path == "helm.toolkit.fluxcd.io/v2/namespaces/review-x/helmreleases/app"
assert sorted(e.name for e in project.environments.list(get_all=True)) == ["production", "review/feature-x"]
assert [e.name for e in project.environments.list(search="feat", get_all=True)] == ["review/feature-x"]
assert [e.name for e in project.environments.list(name="production", get_all=True)] == ["production"]
for bad, words in [({"name": "x", "tier": "prod"}, "tier"), ({"name": "y", "kubernetes_namespace": "ns"}, "needs a cluster_agent_id"), ({"name": "production"}, "already been taken")]:
    try:
        project.environments.create(bad)
        raise AssertionError(f"created {bad}")
    except gitlab.exceptions.GitlabCreateError as error:
        assert error.response_code == 400 and words in str(error), (bad, error)
changed = project.environments.get(production.id)
changed.external_url = "https://new.example.com"
changed.save()
assert project.environments.get(production.id).external_url == "https://new.example.com"
try:
    production.delete()
    raise AssertionError("deleted an available environment")
except gitlab.exceptions.GitlabDeleteError as error:
    assert error.response_code == 403, error
production.stop()
assert project.environments.get(production.id).state == "stopped"
assert [e.name for e in project.environments.list(states="stopped", get_all=True)] == ["production"]
production.delete()
assert [e.name for e in project.environments.list(get_all=True)] == ["review/feature-x"]

agent.delete()
assert project.cluster_agents.list(get_all=True) == []
# Deleting the agent unlinks its environments.
assert "cluster_agent" not in project.environments.get(review.id).attributes
print("all python-gitlab checks passed")
