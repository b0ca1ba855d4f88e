//! Users, members and personal access tokens.

use glagent_core::access::AccessLevel;
use serde::{Deserialize, Serialize};

/// A user, as GitLab's Users API shows one (`GET /user`, `GET /users/:id`,
/// `GET /users`, `POST /users`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Always `null`: glagent keeps no avatars.
    pub avatar_url: Option<String>,
    /// Always `false`: glagent has no bot users.
    pub bot: bool,
    pub created_at: String,
    /// Shown to the user themselves and to administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub id: i64,
    /// Shown to the user themselves and to administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_admin: Option<bool>,
    /// Always `false`.
    pub locked: bool,
    pub name: String,
    /// GitLab's user state; always `active` in glagent.
    pub state: String,
    pub username: String,
    pub web_url: String,
}

/// A member of a group or project, as GitLab's Members API shows one: the
/// user's public fields with the role and the membership's own dates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub access_level: AccessLevel,
    /// Always `null`.
    pub avatar_url: Option<String>,
    /// Always `false`.
    pub bot: bool,
    /// When the membership was made (not the user).
    pub created_at: String,
    /// Always `null`: memberships do not expire in glagent.
    pub expires_at: Option<String>,
    /// The user's id.
    pub id: i64,
    /// Always `false`.
    pub locked: bool,
    pub name: String,
    /// Always `active`.
    pub state: String,
    pub username: String,
    pub web_url: String,
}

/// A personal access token, as GitLab's `GET /personal_access_tokens`
/// lists one (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalAccessToken {
    /// Neither revoked nor expired.
    pub active: bool,
    pub created_at: String,
    /// A day, `YYYY-MM-DD`: the token works until the end of it.
    pub expires_at: Option<String>,
    pub id: i64,
    pub last_used_at: Option<String>,
    pub name: String,
    pub revoked: bool,
    pub scopes: Vec<String>,
    pub user_id: i64,
}

/// A personal access token just created (`POST /users/:id/personal_access_tokens`,
/// `POST /user/personal_access_tokens`): the only time `token` is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedPersonalAccessToken {
    /// Always `true`.
    pub active: bool,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub id: i64,
    pub name: String,
    /// Always `false`.
    pub revoked: bool,
    pub scopes: Vec<String>,
    /// The secret.
    pub token: String,
    pub user_id: i64,
}
