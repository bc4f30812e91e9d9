//! The SQLSTATEs (PostgreSQL's error codes, appendix A of its manual) that `translate` tells
//! apart. A class is the first two characters of a code.

/// `statement_timeout` cancelled the statement.
pub const QUERY_CANCELED: &str = "57014";
/// A prefix: the server is shutting down or starting (57P01 to 57P05).
pub const SHUTTING_DOWN_OR_STARTING: &str = "57P";
/// A class: the connection failed.
pub const CONNECTION_EXCEPTION: &str = "08";
/// A class: the database cannot take more now.
pub const INSUFFICIENT_RESOURCES: &str = "53";
pub const DISK_FULL: &str = "53100";
pub const OUT_OF_MEMORY: &str = "53200";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
/// A class: a value the database cannot take.
pub const DATA_EXCEPTION: &str = "22";
pub const UNIQUE_VIOLATION: &str = "23505";
/// A write sent to a server that takes none (a standby, or a primary being demoted).
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// A class: the transaction was rolled back in a conflict (deadlock, serialization failure).
pub const TRANSACTION_ROLLBACK: &str = "40";
