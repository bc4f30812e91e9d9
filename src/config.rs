//! Command line and environment. Every option can be given as a flag or an environment
//! variable; secrets are redacted from Debug output.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "job-service",
    version,
    about = "Starts automation jobs from workflows, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the gRPC API until SIGTERM or SIGINT.
    Serve(ServeConfig),
}

#[derive(Parser, Clone)]
pub struct ServeConfig {
    /// Address of the gRPC server; port 0 picks a free port.
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// PostgreSQL to use (postgres://user:password@host/db). Unset: the service runs a
    /// PostgreSQL cluster of its own under --data-dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the service keeps its own PostgreSQL cluster (and, later, its keys).
    #[arg(long, env = "JOB_SERVICE_DATA_DIR", default_value = "./.job-service")]
    pub data_dir: PathBuf,

    /// Directory of PostgreSQL's server programs (initdb, pg_ctl, postgres). Unset: the newest
    /// under /usr/lib/postgresql, else the PATH.
    #[arg(long, env = "JOB_SERVICE_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,

    /// Largest number of database connections.
    #[arg(long, env = "JOB_SERVICE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long calls in flight at shutdown may take to finish (e.g. `30s`, `2m`).
    #[arg(long, env = "JOB_SERVICE_DRAIN_TIMEOUT", default_value = "30s")]
    pub drain_timeout: humantime::Duration,

    /// Log line format.
    #[arg(long, env = "JOB_SERVICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("data_dir", &self.data_dir)
            .field("postgres_bin_dir", &self.postgres_bin_dir)
            .field("db_max_connections", &self.db_max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl ServeConfig {
    /// Defaults, as if no flag and no environment variable were given.
    pub fn defaults() -> Self {
        ServeConfig::parse_from(["serve"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_database_password() {
        let mut config = ServeConfig::defaults();
        config.database_url = Some("postgres://app:s3cret@db/jobs".into());
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn serve_parses_flags() {
        let cli = Cli::parse_from([
            "job-service",
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ]);
        let Command::Serve(config) = cli.command;
        assert_eq!(config.grpc_addr.port(), 0);
        assert_eq!(config.log_format, LogFormat::Json);
    }
}
