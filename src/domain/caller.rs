//! Who is calling: the identity every use case acts for.

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
    /// An administrator, for tests.
    #[cfg(test)]
    pub fn test_admin() -> Self {
        Caller {
            sub: super::ids::account_id_for_username("admin"),
            username: "admin".to_owned(),
            groups: Vec::new(),
            roles: vec!["admin".to_owned()],
        }
    }
}
