//! Builds the application (database, listeners) and runs it until the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::auth::Verifier;
use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::grpc;
use crate::observe::metrics::Metrics;
use crate::service::Service;
use crate::store::cluster::ManagedPostgres;
use crate::store::{PoolSettings, Store};
use crate::tls::Tls;
use crate::transport::{self, Limits};

/// A built application: database ready and migrated, listener bound.
pub struct App {
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    service: Arc<Service>,
    engine: Arc<Engine>,
    /// The database's connections, closed at the end of [`App::run`].
    store: Store,
    metrics: Arc<Metrics>,
    cluster: Option<Arc<ManagedPostgres>>,
    verifier: Arc<Verifier>,
    drain_timeout: std::time::Duration,
    idempotency_retention: std::time::Duration,
    http_request_timeout: std::time::Duration,
    limits: Limits,
    tls: Option<Tls>,
}

/// Sets the health of our services and of the server as a whole (the empty service name).
async fn report_health(
    reporter: &tonic_health::server::HealthReporter,
    status: tonic_health::ServingStatus,
) {
    use tonic::server::NamedService;
    for service in [
        grpc::JobServiceServer::<grpc::GrpcApi>::NAME,
        grpc::TaskServiceServer::<grpc::GrpcApi>::NAME,
        grpc::WorkflowServiceServer::<grpc::GrpcApi>::NAME,
        grpc::WorkerServiceServer::<grpc::GrpcApi>::NAME,
        "",
    ] {
        reporter.set_service_status(service, status).await;
    }
}

impl App {
    pub async fn build(config: &ServeConfig) -> anyhow::Result<App> {
        let verifier = Arc::new(
            Verifier::start(&config.keys)
                .await
                .context("cannot load the token keys")?,
        );
        let tls = Tls::from_config(&config.tls, &[config.grpc_addr.ip(), config.http_addr.ip()])
            .context("cannot set up TLS")?;
        let limits = Limits::from_config(config, transport::raise_open_file_limit())?;
        let settings = PoolSettings {
            max_connections: config.db_max_connections,
            acquire_timeout: config.db_acquire_timeout.into(),
            statement_timeout: config.db_statement_timeout.into(),
            startup_timeout: config.db_startup_timeout.into(),
        };
        let (store, cluster) = Store::open(
            config
                .database_url
                .as_ref()
                .map(ExposeSecret::expose_secret),
            &config.keys.data_dir,
            config.postgres_bin_dir.as_deref(),
            &settings,
        )
        .await?;
        let built = async {
            let grpc_listener = TcpListener::bind(config.grpc_addr)
                .await
                .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
            let http_listener = TcpListener::bind(config.http_addr)
                .await
                .with_context(|| format!("cannot listen on {}", config.http_addr))?;
            anyhow::Ok((grpc_listener, http_listener))
        }
        .await;
        match built {
            Ok((grpc_listener, http_listener)) => {
                let run_limits = crate::engine::Limits {
                    max_iterations: config.max_task_iterations,
                    max_attempts: config.max_task_attempts,
                    lease: config.task_lease.into(),
                };
                let settings = crate::service::Settings {
                    max_in_flight: config.max_in_flight,
                    cache_bytes: config.cache_bytes.as_u64(),
                    max_page_bytes: usize::try_from(config.max_page_bytes.as_u64())
                        .unwrap_or(usize::MAX),
                    first_step: config.run_jobs.then_some(run_limits),
                };
                let service = Arc::new(Service::new(store.clone(), settings));
                let engine = Arc::new(Engine::new(
                    store.clone(),
                    service.graphs(),
                    service.workflows(),
                    crate::engine::Settings {
                        limits: run_limits,
                        sweep: config.engine_sweep.into(),
                        run_jobs: config.run_jobs,
                        ..Default::default()
                    },
                ));
                Ok(App {
                    grpc_listener,
                    http_listener,
                    metrics: Arc::new(
                        Metrics::new({
                            let service = service.clone();
                            move || service.pool_stats()
                        })
                        .with_caches({
                            let service = service.clone();
                            move || service.cache_stats()
                        }),
                    ),
                    service,
                    engine,
                    store,
                    cluster,
                    verifier,
                    drain_timeout: config.drain_timeout.into(),
                    idempotency_retention: config.idempotency_retention.into(),
                    http_request_timeout: config.http_request_timeout.into(),
                    limits,
                    tls,
                })
            }
            Err(error) => {
                drop(store);
                if let Some(cluster) = cluster {
                    cluster.stop_after_failure().await;
                }
                Err(error)
            }
        }
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The use cases, for tests and tools that run beside the servers.
    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    /// The engine that runs jobs, for tests and tools that run beside the servers.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight calls and stops the managed
    /// PostgreSQL cluster, if any.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.grpc_addr();
        let http_addr = self.http_addr();
        let (health_reporter, health) = tonic_health::server::health_reporter();
        report_health(&health_reporter, tonic_health::ServingStatus::Serving).await;
        let routes = grpc::router(
            self.service.clone(),
            self.engine.clone(),
            self.metrics.clone(),
            self.verifier.clone(),
            health,
            self.limits.request_body_timeout,
        )?;
        let gateway = crate::http::router(
            self.service.clone(),
            self.engine.clone(),
            self.metrics.clone(),
            self.verifier.clone(),
            self.http_request_timeout,
        );
        // One shutdown signal for both front doors.
        let (draining, drain_started) = tokio::sync::watch::channel(false);
        let service = self.service.clone();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            shutdown.await;
            // Tell health checkers first, then stop accepting.
            service.start_draining();
            report_health(&reporter, tonic_health::ServingStatus::NotServing).await;
            let _ = draining.send(true);
        });
        let signal = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|started| *started).await;
        };
        let engine = self.engine.spawn(drain_started.clone());
        let purger = tokio::spawn(purge_idempotency_keys(
            self.service.clone(),
            self.idempotency_retention,
            drain_started.clone(),
        ));
        let health_watcher = tokio::spawn(follow_readiness(
            self.service.clone(),
            health_reporter.clone(),
            drain_started.clone(),
        ));
        // Restarts the managed cluster if it dies while serving; never once draining starts.
        let supervisor = self
            .cluster
            .clone()
            .map(|cluster| cluster.supervise(drain_started.clone()));
        if self.tls.is_some() {
            tracing::info!("both front doors serve TLS only");
        }
        tracing::info!("grpc listening on {addr}");
        tracing::info!("http listening on {http_addr}");
        let limits = self.limits.clone();
        let grpc = limits
            .grpc_server()
            // Outermost but for the call tracking (tonic's first layer wraps the others), so it
            // sees the final status.
            .layer(grpc::ObserveLayer::new(self.metrics.clone()))
            .layer(tower::util::MapResponseLayer::new(
                grpc::oversize_is_resource_exhausted,
            ))
            .add_routes(routes);
        let grpc_listener = transport::Listener::new(
            self.grpc_listener,
            limits.max_connections,
            limits.grpc_idle_timeout,
        );
        let http_listener = transport::Listener::new(
            self.http_listener,
            limits.max_connections,
            limits.http_idle_timeout,
        );
        // The same servers over TLS connections or plain TCP ones.
        type Served<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;
        let (grpc, http): (Served<Result<(), tonic::transport::Error>>, Served<()>) =
            match &self.tls {
                Some(tls) => (
                    Box::pin(grpc.serve_with_incoming_shutdown(
                        tls.grpc_incoming(grpc_listener).into_stream(),
                        signal(drain_started.clone()),
                    )),
                    Box::pin(transport::serve_http(
                        tls.http_incoming(http_listener),
                        gateway,
                        limits,
                        signal(drain_started.clone()),
                    )),
                ),
                None => (
                    Box::pin(grpc.serve_with_incoming_shutdown(
                        transport::plain(grpc_listener).into_stream(),
                        signal(drain_started.clone()),
                    )),
                    Box::pin(transport::serve_http(
                        transport::plain(http_listener),
                        gateway,
                        limits,
                        signal(drain_started.clone()),
                    )),
                ),
            };
        let server = async {
            let (grpc, ()) = tokio::join!(grpc, http);
            grpc.context("grpc server failed")
        };
        let mut drain_started = drain_started;
        // In-flight calls get `drain_timeout` to finish; a client that keeps an idle connection
        // open must not hold the shutdown up forever.
        let drain_timeout = self.drain_timeout;
        let served = tokio::select! {
            served = server => served,
            _ = async {
                let _ = drain_started.wait_for(|started| *started).await;
                tokio::time::sleep(drain_timeout).await;
            } => {
                tracing::warn!(timeout = ?drain_timeout, "calls still open after the drain timeout are cut off");
                Ok(())
            }
        };
        tracing::info!("servers stopped");
        for task in engine {
            let _ = task.await;
        }
        purger.abort();
        health_watcher.abort();
        if let Some(supervisor) = supervisor {
            // It stops when draining starts (finishing a restart under way, so that the stop
            // below stops it); servers that failed without draining leave it to be cut off.
            if !*drain_started.borrow() {
                supervisor.abort();
            }
            let _ = supervisor.await;
        }
        // Before the cluster stops, so that no connection finds it gone.
        self.store.close().await;
        if let Some(cluster) = &self.cluster {
            cluster.stop().await?;
        }
        served
    }
}

/// How often gRPC health follows readiness.
const HEALTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps gRPC health (`grpc.health.v1`) in step with readiness (`GET /health/ready`) until
/// shutdown starts: `NOT_SERVING` while the database does not answer or does not take writes,
/// `SERVING` again once it does, so that gRPC load balancers and Kubernetes' gRPC probes see
/// what HTTP ones see. Each change is logged once.
async fn follow_readiness(
    service: Arc<Service>,
    reporter: tonic_health::server::HealthReporter,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = true;
    let mut every = tokio::time::interval(HEALTH_INTERVAL);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = async { shutdown.wait_for(|started| *started).await.map(|_| ()) } => return,
        }
        let ready = service.ready().await;
        if *shutdown.borrow() {
            return;
        }
        match (serving, ready) {
            (true, Err(reason)) => {
                tracing::warn!(reason = %reason, "not ready: grpc health is NOT_SERVING");
                report_health(&reporter, tonic_health::ServingStatus::NotServing).await;
                serving = false;
            }
            (false, Ok(())) => {
                tracing::info!("ready again: grpc health is SERVING");
                report_health(&reporter, tonic_health::ServingStatus::Serving).await;
                serving = true;
            }
            _ => {}
        }
    }
}

/// Forgets expired idempotency keys every hour until shutdown starts.
async fn purge_idempotency_keys(
    service: Arc<Service>,
    retention: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => match service.purge_idempotency_keys(retention).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired idempotency keys forgotten"),
                Err(error) => tracing::warn!(error = %error, "cannot purge expired idempotency keys"),
            },
            _ = async { shutdown.wait_for(|started| *started).await.map(|_| ()) } => return,
        }
    }
}
