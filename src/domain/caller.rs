//! Who is calling: the identity every use case acts for.

use super::ids::account_id_for_username;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Account id (`sub`).
    pub sub: String,
    pub username: String,
    /// Group ids the caller belongs to.
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

impl Caller {
    /// The built-in administrator that every call runs as while no authentication is
    /// configured.
    pub fn builtin_admin() -> Self {
        Caller {
            sub: account_id_for_username("admin"),
            username: "admin".to_owned(),
            groups: Vec::new(),
            roles: vec!["admin".to_owned()],
        }
    }
}
