//! Who may do what: roles to actions (one table), and group-based access to workflows and jobs.

use super::caller::Caller;
use super::error::Error;

/// What a method does, as far as roles are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    StartJob,
    ReadJobs,
    WriteWorkflows,
    ReadWorkflows,
    /// Cancel, pause, resume; finish manual tasks; retry tasks.
    ControlJobs,
    /// Stream a job's events.
    WatchJobs,
    /// The WorkerService: take tasks, heartbeat, complete them.
    RunTasks,
}

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::StartJob => "start jobs",
            Action::ReadJobs => "read jobs",
            Action::WriteWorkflows => "change workflows",
            Action::ReadWorkflows => "read workflows",
            Action::ControlJobs => "control jobs and their tasks",
            Action::WatchJobs => "watch jobs",
            Action::RunTasks => "run tasks as a worker",
        }
    }
}

/// The roles that grant each action. Unknown roles grant nothing.
const ROLE_TABLE: &[(&str, &[Action])] = &[
    (
        "admin",
        &[
            Action::StartJob,
            Action::ReadJobs,
            Action::WriteWorkflows,
            Action::ReadWorkflows,
            Action::ControlJobs,
            Action::WatchJobs,
            Action::RunTasks,
        ],
    ),
    (
        "engineering",
        &[
            Action::StartJob,
            Action::ReadJobs,
            Action::WriteWorkflows,
            Action::ReadWorkflows,
            Action::ControlJobs,
            Action::WatchJobs,
        ],
    ),
    (
        "operations",
        &[
            Action::StartJob,
            Action::ReadJobs,
            Action::ReadWorkflows,
            Action::ControlJobs,
            Action::WatchJobs,
        ],
    ),
    (
        "apiread",
        &[Action::ReadJobs, Action::ReadWorkflows, Action::WatchJobs],
    ),
    // Task workers: the WorkerService and nothing else.
    ("worker", &[Action::RunTasks]),
];

impl Caller {
    /// `admin` sees every group.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "admin")
    }

    /// PERMISSION_DENIED unless one of the caller's roles grants `action`.
    pub fn require(&self, action: Action) -> Result<(), Error> {
        let granted = ROLE_TABLE
            .iter()
            .filter(|(role, _)| self.roles.iter().any(|r| r == role))
            .any(|(_, actions)| actions.contains(&action));
        if granted {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "{} may not {}: none of the roles [{}] allows it",
                self.username,
                action.describe(),
                self.roles.join(", ")
            )))
        }
    }

    /// Whether the caller may see an item with these groups: admin, an item without groups, or
    /// a group in common.
    pub fn can_see(&self, groups: &[String]) -> bool {
        self.is_admin() || groups.is_empty() || groups.iter().any(|g| self.groups.contains(g))
    }

    /// The groups to filter lists by: `None` for an admin (everything), else the caller's.
    pub fn visibility_filter(&self) -> Option<&[String]> {
        (!self.is_admin()).then_some(self.groups.as_slice())
    }

    /// PERMISSION_DENIED when a non-admin names a group it does not belong to; `field` names the
    /// list (`options.groups`).
    pub fn require_own_groups(&self, groups: &[String], field: &str) -> Result<(), Error> {
        if self.is_admin() {
            return Ok(());
        }
        match groups
            .iter()
            .enumerate()
            .find(|(_, g)| !self.groups.contains(g))
        {
            None => Ok(()),
            Some((i, group)) => Err(Error::PermissionDenied(format!(
                "{field}[{i}]: {} is not a member of group {group}",
                self.username
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str], groups: &[&str]) -> Caller {
        Caller {
            sub: "0123456789abcdef01234567".into(),
            username: "pat".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn roles_grant_exactly_their_actions() {
        use Action::*;
        let cases: [(&str, [bool; 4]); 5] = [
            ("admin", [true, true, true, true]),
            ("engineering", [true, true, true, true]),
            ("operations", [true, true, false, true]),
            ("apiread", [false, true, false, true]),
            ("superuser", [false, false, false, false]),
        ];
        for (role, expected) in cases {
            let c = caller(&[role], &[]);
            let got =
                [StartJob, ReadJobs, WriteWorkflows, ReadWorkflows].map(|a| c.require(a).is_ok());
            assert_eq!(got, expected, "{role}");
        }
    }

    #[test]
    fn group_visibility_follows_membership() {
        let a = "aaaaaaaaaaaaaaaaaaaaaaaa".to_string();
        let b = "bbbbbbbbbbbbbbbbbbbbbbbb".to_string();
        let member = caller(&["operations"], &[&a]);
        assert!(member.can_see(&[]));
        assert!(member.can_see(&[a.clone(), b.clone()]));
        assert!(!member.can_see(std::slice::from_ref(&b)));
        assert!(caller(&["admin"], &[]).can_see(std::slice::from_ref(&b)));
        assert!(member
            .require_own_groups(std::slice::from_ref(&a), "options.groups")
            .is_ok());
        let err = member
            .require_own_groups(&[a, b], "options.groups")
            .unwrap_err();
        assert!(err.to_string().starts_with("options.groups[1]"), "{err}");
    }
}
