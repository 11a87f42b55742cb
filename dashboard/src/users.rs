//! Client ACL users held by the dashboard (`/api/v1/users`, `kodis user
//! add|rm|ls`): stored with the password hashed (`/kodis/<cluster>/users`), fetched
//! by every proxy with its topology polls and compiled there without a restart.
//! Rules are checked here first, as a proxy would at start-up, so a proxy never
//! gets users it cannot compile.

use kodis_common::acl::{ClientUser, ClientUsers, SetUser};
use tracing::info;

use crate::dashboard::Dashboard;
use crate::error::ApiError;

/// The users as a proxy's config would hold them, for validation.
fn as_config(users: &[ClientUser]) -> Vec<kodis_proxy::acl::UserConfig> {
    users
        .iter()
        .map(|u| kodis_proxy::acl::UserConfig {
            name: u.name.clone(),
            password: None,
            password_sha256: u.password_sha256.clone(),
            rules: u.rules.clone(),
        })
        .collect()
}

/// Adds `req`'s user, or replaces the one of that name; the users recorded now.
pub async fn set(d: &Dashboard, req: SetUser) -> Result<ClientUsers, ApiError> {
    if req.password.is_some() && req.password_sha256.is_some() {
        return Err(ApiError::BadRequest(
            "set password or password_sha256, not both".into(),
        ));
    }
    let user = ClientUser {
        name: req.name.clone(),
        password_sha256: match (&req.password, req.password_sha256) {
            (Some(pw), _) => Some(kodis_proxy::acl::hash_password(pw.as_bytes())),
            (None, h) => h,
        },
        rules: req.rules,
    };
    let change = d.begin().await?;
    change.ensure_active().await?;
    let mut users = d.client_users().await?;
    users.users.retain(|u| u.name != user.name);
    users.users.push(user);
    users
        .users
        .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    kodis_proxy::acl::validate(None, &as_config(&users.users))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    users.version += 1;
    change.put_client_users(&users).await?;
    info!(name = %req.name, version = users.version, "ACL user recorded");
    Ok(users)
}

/// Removes user `name`; the users recorded now.
pub async fn remove(d: &Dashboard, name: &str) -> Result<ClientUsers, ApiError> {
    let change = d.begin().await?;
    change.ensure_active().await?;
    let mut users = d.client_users().await?;
    let before = users.users.len();
    users.users.retain(|u| u.name != name);
    if users.users.len() == before {
        return Err(ApiError::NotFound(format!("no ACL user {name:?}")));
    }
    users.version += 1;
    change.put_client_users(&users).await?;
    info!(%name, version = users.version, "ACL user removed");
    Ok(users)
}
