//! Starting and stopping: bind, answer 503 while the models load, serve, and on Ctrl-C or SIGTERM
//! answer 503 to anything new (`/health` included) while the requests already accepted finish,
//! then stop accepting, close the connections and return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use candle_embed_engine::{Embedder, EmbeddingArchitecture, Reranker};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api::{router, AppState, Served, ServedModel};
use crate::args::ServeArgs;
use crate::metrics::Metrics;
use crate::models::ModelSpec;
use crate::scheduler::{AdmissionLimits, Scheduler};

/// How long connections may take to close once every admitted request is answered.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the server on a new tokio runtime until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    keep_large_buffers_out_of_the_heap();
    // Blocking work is CPU work (tokenizing, model loading): more threads than cores would only
    // take turns, and each keeps its stack and a malloc arena after a burst.
    let cores = std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((2 * cores).max(4))
        .thread_name("candle-embed-http")
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(args, shutdown_signal()));
    // A model still loading on the blocking pool (a signal came first) must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves `args` until `shutdown` resolves (or a model fails to load, which is an error).
pub async fn serve(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let specs = ModelSpec::from_args(&args)?;
    let addr = format!("{}:{}", args.host, args.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local: SocketAddr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::default());
    let names = specs.iter().map(|s| s.name.clone()).collect();
    let state = Arc::new(AppState::new(names, &args, Arc::clone(&metrics)));

    let (load_failed_tx, load_failed) = oneshot::channel::<anyhow::Error>();
    let loader_state = Arc::clone(&state);
    let limits = AdmissionLimits {
        requests: args.max_concurrent_requests,
        tokens: args.tokens_in_flight(),
    };
    tokio::spawn(async move {
        match load_models(specs, limits, &metrics).await {
            Ok(served) => {
                let names: Vec<_> = served.iter().map(|m| m.name.clone()).collect();
                let _ = loader_state.models.set(served);
                tracing::info!("ready: serving {}", names.join(", "));
            }
            Err(err) => {
                let _ = load_failed_tx.send(err);
            }
        }
    });

    tokio::spawn(return_memory_when_idle(Arc::clone(&state.metrics)));
    tracing::info!("listening on http://{local} (models loading)");
    let stop_state = Arc::clone(&state);
    let (failure_tx, failure_rx) = oneshot::channel();
    let stop = async move {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down: finishing accepted requests");
                stop_state.shutting_down.store(true, Ordering::SeqCst);
                // Draining: connections are still accepted, so /health and new requests get a
                // 503 that says so (not a refused connection) until every admitted request is
                // answered; then axum stops accepting and waits for the handlers still running.
                while stop_state.metrics.in_flight.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            Ok(err) = load_failed => {
                stop_state.shutting_down.store(true, Ordering::SeqCst);
                let _ = failure_tx.send(err);
            }
        }
    };
    crate::connections::serve(
        listener,
        router(state),
        args.connection_limits(),
        stop,
        SHUTDOWN_GRACE,
    )
    .await;
    if let Ok(err) = failure_rx.await {
        return Err(err);
    }
    tracing::info!("stopped");
    Ok(())
}

/// Request bodies and their texts run to megabytes. glibc serves allocations that large from
/// mmap (returned to the system on free) only up to a threshold that it raises each time such a
/// block is freed; after one burst they would come from the heap and stay there. Pinning the
/// threshold at 256 KiB keeps them out. (A no-op elsewhere.)
#[allow(unsafe_code)]
fn keep_large_buffers_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tuning parameter; called before the runtime starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// glibc keeps what a burst of large bodies freed in its per-thread arenas, so RSS would stay at
/// the burst's level; once a second, if requests were answered since the last look and none is
/// running now, the free pages go back to the system. (A no-op elsewhere.)
#[allow(unsafe_code)]
async fn return_memory_when_idle(metrics: Arc<Metrics>) {
    let mut seen = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let answered = metrics.answered.load(Ordering::Relaxed);
        if answered != seen && metrics.in_flight.load(Ordering::SeqCst) == 0 {
            seen = answered;
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks glibc's own arenas under their locks.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }
}

async fn load_models(
    specs: Vec<ModelSpec>,
    limits: AdmissionLimits,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Vec<Served>> {
    let mut served = Vec::with_capacity(specs.len());
    for spec in specs {
        let options = spec.options.clone();
        let reranker = options.arch == Some(EmbeddingArchitecture::Qwen3Reranker);
        let model = tokio::task::spawn_blocking(move || -> candle_embed_engine::Result<_> {
            Ok(if reranker {
                ServedModel::Reranker(Arc::new(Reranker::load(&options)?))
            } else {
                ServedModel::Embedding(Arc::new(Embedder::load(&options)?))
            })
        })
        .await?
        .with_context(|| format!("loading model `{}`", spec.name))?;
        let (decoder, budget) = match &model {
            ServedModel::Embedding(m) => (m.decoder(), m.budget()),
            ServedModel::Reranker(m) => (m.decoder(), m.budget()),
        };
        let scheduler = Scheduler::start(decoder, budget, limits, Arc::clone(metrics), &spec.name)?;
        served.push(Served {
            name: spec.name,
            model,
            scheduler,
        });
    }
    Ok(served)
}
