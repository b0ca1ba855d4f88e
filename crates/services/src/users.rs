//! Creating users: every user gets a personal namespace of the same path.

use glagent_store::{NamespaceKind, NewNamespace, NewUser, Store, StoreError, User};

/// Creates a user with its personal namespace.
pub async fn create_user(
    store: &Store,
    username: &str,
    name: &str,
    email: &str,
    admin: bool,
) -> Result<User, StoreError> {
    if store.namespace_by_full_path(username).await.is_ok() {
        return Err(StoreError::Conflict(format!(
            "the path {username:?} is already taken by a group or user"
        )));
    }
    let user = store
        .create_user(&NewUser {
            username: username.to_string(),
            name: name.to_string(),
            email: email.to_string(),
            is_admin: admin,
        })
        .await?;
    store
        .create_namespace(&NewNamespace {
            kind: NamespaceKind::User,
            name: name.to_string(),
            path: username.to_string(),
            full_path: username.to_string(),
            parent_id: None,
            owner_id: Some(user.id),
            description: String::new(),
        })
        .await?;
    Ok(user)
}
