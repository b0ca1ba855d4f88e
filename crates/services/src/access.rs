//! Roles, inherited down the namespace tree: a project's effective role is
//! the highest of its direct membership and its ancestors' memberships;
//! administrators and owners of personal namespaces are owners.

use glagent_core::access::AccessLevel;
use glagent_core::agent_config::UserAccess;
use glagent_store::{MemberSource, Namespace, Project, Store, User};

/// The namespace and all its ancestors, nearest first.
pub async fn namespace_chain(store: &Store, namespace_id: i64) -> glagent_store::Result<Vec<Namespace>> {
    let mut chain = Vec::new();
    let mut next = Some(namespace_id);
    while let Some(id) = next {
        let ns = store.namespace(id).await?;
        next = ns.parent_id;
        chain.push(ns);
    }
    Ok(chain)
}

/// The user's role in a namespace: their own membership or one inherited
/// from an ancestor group.
pub async fn namespace_access(
    store: &Store,
    user: &User,
    namespace_id: i64,
) -> glagent_store::Result<Option<AccessLevel>> {
    if user.is_admin {
        return Ok(Some(AccessLevel::Owner));
    }
    let mut best: Option<AccessLevel> = None;
    for ns in namespace_chain(store, namespace_id).await? {
        if ns.owner_id == Some(user.id) {
            return Ok(Some(AccessLevel::Owner));
        }
        if let Some(member) = store.member(MemberSource::Namespace(ns.id), user.id).await? {
            best = best.max(Some(member.access_level));
        }
    }
    Ok(best)
}

/// The user's role in a project: direct or inherited from its groups.
pub async fn project_access(
    store: &Store,
    user: &User,
    project: &Project,
) -> glagent_store::Result<Option<AccessLevel>> {
    let inherited = namespace_access(store, user, project.namespace_id).await?;
    let direct = store
        .member(MemberSource::Project(project.id), user.id)
        .await?
        .map(|m| m.access_level);
    Ok(inherited.max(direct))
}

/// The user's roles in the projects and groups an agent's `user_access`
/// lists (places that do not exist, or where the user has no role, are left
/// out), for [`glagent_core::identity::user_identity`].
pub async fn user_access_roles(store: &Store, user: &User, access: &UserAccess) -> glagent_store::Result<Roles> {
    let mut roles = Roles::default();
    for entry in &access.projects {
        let project = match store.project_by_full_path(entry.id.as_str()).await {
            Ok(project) => project,
            Err(glagent_store::StoreError::NotFound) => continue,
            Err(error) => return Err(error),
        };
        if let Some(level) = project_access(store, user, &project).await? {
            roles.projects.push((project.id, level));
        }
    }
    for entry in &access.groups {
        let group = match store.namespace_by_full_path(entry.id.as_str()).await {
            Ok(group) if group.is_group() => group,
            Ok(_) | Err(glagent_store::StoreError::NotFound) => continue,
            Err(error) => return Err(error),
        };
        if let Some(level) = namespace_access(store, user, group.id).await? {
            roles.groups.push((group.id, level));
        }
    }
    Ok(roles)
}

/// A caller's roles in the places an agent lists, by project or group id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub projects: Vec<(i64, AccessLevel)>,
    pub groups: Vec<(i64, AccessLevel)>,
}

impl crate::Services {
    pub async fn namespace_chain(&self, namespace_id: i64) -> glagent_store::Result<Vec<Namespace>> {
        namespace_chain(&self.store, namespace_id).await
    }

    pub async fn namespace_access(&self, user: &User, namespace_id: i64) -> glagent_store::Result<Option<AccessLevel>> {
        namespace_access(&self.store, user, namespace_id).await
    }

    pub async fn project_access(&self, user: &User, project: &Project) -> glagent_store::Result<Option<AccessLevel>> {
        project_access(&self.store, user, project).await
    }

    /// The projects `user` can see, with their role in each, by id.
    pub async fn visible_projects(&self, user: &User) -> glagent_store::Result<Vec<(Project, AccessLevel)>> {
        let mut visible = Vec::new();
        for project in self.store.projects().await? {
            if let Some(level) = self.project_access(user, &project).await? {
                visible.push((project, level));
            }
        }
        Ok(visible)
    }
}
