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

agent.delete()
assert project.cluster_agents.list(get_all=True) == []
print("all python-gitlab checks passed")
