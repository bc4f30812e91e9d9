use clap::Parser;
use job_service::app::App;
use job_service::config::{Cli, Command};
use job_service::observe::telemetry;

/// Each start allocates and frees many small JSON values; mimalloc spends far less time on that
/// than the system allocator (malloc and free took a fifth of the CPU under load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Cli { command } = Cli::parse();
    match command {
        Command::Serve(config) => {
            let telemetry =
                match telemetry::init(config.log_format, config.otlp_endpoint.as_deref()) {
                    Ok(telemetry) => telemetry,
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        return std::process::ExitCode::FAILURE;
                    }
                };
            // Before anything starts: a signal from then on stops the service gracefully.
            let shutdown = shutdown_signal();
            let result = async {
                let app = App::build(&config).await?;
                app.run(shutdown).await
            }
            .await;
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            match result {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Worker(config) => {
            if let Err(why) = config.check() {
                eprintln!("error: {why}");
                return std::process::ExitCode::from(2);
            }
            if let Err(error) = telemetry::init(config.log_format, None) {
                eprintln!("error: {error:#}");
                return std::process::ExitCode::FAILURE;
            }
            match job_service::worker::run(config, signals()).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Token(config) => match job_service::auth::token_for(&config) {
            Ok(token) => {
                if config.roles.is_empty() {
                    eprintln!("note: the token has no role, so it allows no method; add --roles");
                }
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// One message for each SIGTERM or SIGINT, from now on: the worker drains on the first and
/// stops at once on the second.
fn signals() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            tracing::info!("signal received");
            if sender.send(()).await.is_err() {
                break;
            }
        }
    });
    receiver
}

/// Resolves on SIGTERM, SIGINT, SIGHUP or SIGQUIT. The handlers are installed when this is
/// called, not when the future is first polled: a signal that arrives while the service
/// starts, or just after it says it listens, is kept and answered with a graceful shutdown
/// instead of ending the process on the spot (with its PostgreSQL left running). SIGHUP and
/// SIGQUIT, which would otherwise end the process at once, are handled the same way: the
/// service does not reload anything in place (new certificates and keys are read at start),
/// so a hangup means stop, cleanly; a supervisor starts it again.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut handlers = [
        ("SIGTERM", SignalKind::terminate()),
        ("SIGINT", SignalKind::interrupt()),
        ("SIGHUP", SignalKind::hangup()),
        ("SIGQUIT", SignalKind::quit()),
    ]
    .map(|(name, kind)| {
        let handler = signal(kind).unwrap_or_else(|error| panic!("cannot handle {name}: {error}"));
        (name, handler)
    });
    async move {
        let [(term, a), (int, b), (hup, c), (quit, d)] = &mut handlers;
        let name = tokio::select! {
            _ = a.recv() => *term,
            _ = b.recv() => *int,
            _ = c.recv() => *hup,
            _ = d.recv() => *quit,
        };
        tracing::info!(
            signal = name,
            "shutdown signal received, finishing in-flight calls"
        );
    }
}
