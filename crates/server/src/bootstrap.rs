//! First start: the `root` administrator, its token and its password,
//! written to `<data-dir>/initial_root_token` and
//! `<data-dir>/initial_root_password` (0600) like GitLab's
//! initial_root_password.

use std::path::Path;

use anyhow::{Context, Result};
use glagent_core::secret::{self, Secret};
use glagent_services::users::create_user;
use glagent_store::{NewPersonalAccessToken, Store, StoreError};

use crate::tls::write_private;

/// Creates `root` on an empty database, its first token and password in
/// their files (mode 0600); returns whether it did.
pub async fn ensure_root(
    store: &Store,
    data_dir: &Path,
    preset: Option<String>,
    preset_password: Option<String>,
) -> Result<bool> {
    match store.user_by_username("root").await {
        Ok(_) => return Ok(false),
        Err(StoreError::NotFound) => {}
        Err(other) => return Err(other.into()),
    }
    let token = match preset {
        Some(value) => {
            let value = value.trim().to_string();
            anyhow::ensure!(
                value.len() >= 20 && value.chars().all(|c| c.is_ascii_graphic()),
                "KAS_INITIAL_ROOT_TOKEN must be at least 20 printable characters without spaces"
            );
            Secret::new(value)
        }
        None => secret::new_personal_access_token(),
    };
    let password = match preset_password {
        Some(value) => {
            glagent_services::passwords::validate(&value)
                .map_err(|e| anyhow::anyhow!("KAS_INITIAL_ROOT_PASSWORD: {e}"))?;
            Secret::new(value)
        }
        None => secret::new_password(),
    };
    let root = match create_user(store, "root", "Administrator", "admin@example.com", true).await {
        Ok(user) => user,
        // Another replica sharing the database won the race.
        Err(StoreError::Conflict(_)) => return Ok(false),
        Err(other) => return Err(other.into()),
    };
    store
        .create_personal_access_token(&NewPersonalAccessToken {
            user_id: root.id,
            name: "initial root token".into(),
            scopes: vec!["api".into(), "k8s_proxy".into()],
            token_digest: token.digest(),
            expires_at: None,
        })
        .await?;
    glagent_services::passwords::set(store, root.id, password.expose())
        .await
        .context("setting the initial root password")?;
    let path = data_dir.join("initial_root_token");
    write_private(&path, &format!("{}\n", token.expose())).with_context(|| format!("writing {}", path.display()))?;
    let path = data_dir.join("initial_root_password");
    write_private(&path, &format!("{}\n", password.expose())).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}
