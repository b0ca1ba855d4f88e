//! JSON shapes of GitLab's API entities.

use glagent_store::{Agent, AgentToken, Member, Namespace, Project, User};
use serde_json::{Value, json};

use crate::Api;

pub fn user(state: &Api, user: &User, with_private: bool) -> Value {
    let mut value = json!({
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": "active",
        "locked": false,
        "avatar_url": null,
        "web_url": format!("{}/{}", state.urls.base(), user.username),
        "created_at": user.created_at,
        "bot": false,
    });
    if with_private {
        value["email"] = json!(user.email);
        value["is_admin"] = json!(user.is_admin);
    }
    value
}

pub fn member(state: &Api, user: &User, member: &Member) -> Value {
    let mut value = self::user(state, user, false);
    value["access_level"] = json!(member.access_level);
    value["created_at"] = json!(member.created_at);
    value["expires_at"] = Value::Null;
    value
}

pub fn group(state: &Api, group: &Namespace) -> Value {
    json!({
        "id": group.id,
        "name": group.name,
        "path": group.path,
        "full_path": group.full_path,
        "full_name": group.full_path.replace('/', " / "),
        "description": group.description,
        "visibility": "private",
        "parent_id": group.parent_id,
        "web_url": format!("{}/groups/{}", state.urls.base(), group.full_path),
        "created_at": group.created_at,
    })
}

fn namespace(state: &Api, ns: &Namespace) -> Value {
    json!({
        "id": ns.id,
        "name": ns.name,
        "path": ns.path,
        "kind": ns.kind,
        "full_path": ns.full_path,
        "parent_id": ns.parent_id,
        "web_url": format!("{}/{}", state.urls.base(), ns.full_path),
    })
}

pub fn project(state: &Api, project: &Project, ns: &Namespace) -> Value {
    let name_with_namespace = format!("{} / {}", ns.full_path.replace('/', " / "), project.name);
    json!({
        "id": project.id,
        "name": project.name,
        "name_with_namespace": name_with_namespace,
        "path": project.path,
        "path_with_namespace": project.full_path,
        "description": project.description,
        "default_branch": project.default_branch,
        "visibility": "private",
        "web_url": format!("{}/{}", state.urls.base(), project.full_path),
        "http_url_to_repo": format!("{}/{}.git", state.urls.base(), project.full_path),
        "ssh_url_to_repo": null,
        "created_at": project.created_at,
        "creator_id": project.creator_id,
        "namespace": namespace(state, ns),
    })
}

/// The config project as GitLab embeds it in agents.
fn config_project(project: &Project, ns: &Namespace) -> Value {
    json!({
        "id": project.id,
        "description": project.description,
        "name": project.name,
        "name_with_namespace": format!("{} / {}", ns.full_path.replace('/', " / "), project.name),
        "path": project.path,
        "path_with_namespace": project.full_path,
        "created_at": project.created_at,
    })
}

pub fn agent(agent: &Agent, project: &Project, ns: &Namespace) -> Value {
    json!({
        "id": agent.id,
        "name": agent.name,
        "config_project": config_project(project, ns),
        "created_at": agent.created_at,
        "created_by_user_id": agent.created_by_user_id,
    })
}

pub fn agent_token(token: &AgentToken, with_last_used: bool) -> Value {
    let mut value = json!({
        "id": token.id,
        "name": token.name,
        "description": token.description,
        "agent_id": token.agent_id,
        "status": token.status,
        "created_at": token.created_at,
        "created_by_user_id": token.created_by_user_id,
    });
    if with_last_used {
        value["last_used_at"] = json!(token.last_used_at);
    }
    value
}
