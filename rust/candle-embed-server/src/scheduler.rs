//! Dynamic batching, one scheduler per model: the stage between the engine's `prepare` and
//! `finish`. Handlers prepare requests on the blocking pool (never on the model thread), then
//! send the token sequences to a queue actor; the model runs on its own OS thread and asks the
//! actor for its next batch, filled from the queue's front by the engine's [`TokenBudget`] rule.
//! A request larger than one batch is split and its pooled rows reassembled in input order; a
//! request whose client went away is skipped; a semaphore bounds admitted requests (full → 429).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use candle_embed_engine::pack::{PackedBatch, TokenBudget};
use candle_embed_engine::{Decoder, Pooled};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// The pooled rows of one request, or why the model failed on them.
pub type BatchResult = Result<Pooled, String>;

/// Where the pooled rows of one request are gathered, piece by piece, before they go back.
struct Assembly {
    state: Mutex<AssemblyState>,
}

struct AssemblyState {
    /// `rows × width`, allocated when the first piece tells the width.
    values: Vec<f32>,
    rows: usize,
    filled: usize,
    reply: Option<oneshot::Sender<BatchResult>>,
}

impl Assembly {
    fn new(rows: usize, reply: oneshot::Sender<BatchResult>) -> Self {
        Self {
            state: Mutex::new(AssemblyState {
                values: Vec::new(),
                rows,
                filled: 0,
                reply: Some(reply),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AssemblyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client stopped waiting (its receiver was dropped) or the request already failed.
    fn is_cancelled(&self) -> bool {
        self.lock()
            .reply
            .as_ref()
            .is_none_or(oneshot::Sender::is_closed)
    }

    /// Stores `rows` (rows of `width`) as those of inputs `start..`; sends the whole answer
    /// once every input is in.
    fn fill(&self, start: usize, rows: &[f32], width: usize) {
        let mut state = self.lock();
        if state.values.is_empty() {
            state.values = vec![0.0; state.rows * width];
        }
        state.values[start * width..][..rows.len()].copy_from_slice(rows);
        state.filled += rows.len() / width;
        if state.filled == state.rows {
            if let Some(reply) = state.reply.take() {
                let values = std::mem::take(&mut state.values);
                let _ = reply.send(Ok(Pooled::new(values, width)));
            }
        }
    }

    fn fail(&self, message: &str) {
        if let Some(reply) = self.lock().reply.take() {
            let _ = reply.send(Err(message.to_owned()));
        }
    }
}

/// A request waiting in the queue; `next` is its first input not yet handed to a batch.
struct Entry {
    assembly: Arc<Assembly>,
    sequences: Vec<Vec<u32>>,
    next: usize,
    enqueued: Instant,
}

/// Part of one request inside a batch: its inputs `start..start + sequences.len()`.
struct Piece {
    assembly: Arc<Assembly>,
    start: usize,
    sequences: Vec<Vec<u32>>,
}

/// One forward pass worth of work.
struct Batch {
    pieces: Vec<Piece>,
    tokens: usize,
}

/// Takes sequences from the queue's front, in order, while `budget` admits them. Cancelled
/// requests are dropped on the way.
fn next_batch(
    queue: &mut VecDeque<Entry>,
    budget: TokenBudget,
    metrics: &Metrics,
) -> Option<Batch> {
    let mut pieces = Vec::new();
    let mut tokens = 0;
    while let Some(entry) = queue.front_mut() {
        if entry.assembly.is_cancelled() {
            queue.pop_front();
            metrics
                .cancelled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        }
        let start = entry.next;
        let mut end = start;
        while let Some(seq) = entry.sequences.get(end) {
            if !budget.admits(tokens, seq.len()) {
                break;
            }
            tokens += seq.len();
            end += 1;
        }
        if end == start {
            break;
        }
        if start == 0 {
            metrics
                .queue_duration
                .observe_duration(entry.enqueued.elapsed());
        }
        let sequences = entry.sequences[start..end]
            .iter_mut()
            .map(std::mem::take)
            .collect();
        pieces.push(Piece {
            assembly: Arc::clone(&entry.assembly),
            start,
            sequences,
        });
        entry.next = end;
        if end < entry.sequences.len() {
            break; // the budget is full
        }
        queue.pop_front();
    }
    (!pieces.is_empty()).then_some(Batch { pieces, tokens })
}

/// How much one model's queue admits at once: requests, and tokens of input (what the model's
/// time and the queue's memory are spent on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub requests: usize,
    pub tokens: usize,
}

/// Handle to one model's queue; cheap to share behind an `Arc`.
pub struct Scheduler {
    jobs: mpsc::UnboundedSender<Entry>,
    permits: Arc<Semaphore>,
    tokens: Arc<Semaphore>,
    limits: AdmissionLimits,
    metrics: Arc<Metrics>,
}

/// How long a request may wait for room under `--max-tokens-in-flight` before its 429: long enough
/// to ride out a burst, short against a client's timeout.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `amount` permits of a budget of `limit` (all of it, for an amount above the limit), waiting up
/// to [`ADMISSION_WAIT`] in arrival order; `None` when they are not free by then. Tokens in flight
/// and body bytes in flight are both budgets of this kind.
pub(crate) async fn reserve_within(
    budget: &Arc<Semaphore>,
    amount: usize,
    limit: usize,
) -> Option<OwnedSemaphorePermit> {
    let wanted = u32::try_from(amount.clamp(1, limit.max(1))).unwrap_or(u32::MAX);
    let acquire = Arc::clone(budget).acquire_many_owned(wanted);
    tokio::time::timeout(ADMISSION_WAIT, acquire)
        .await
        .ok()?
        .ok()
}

/// Tokens of a request reserved in its model's queue; released when dropped (the answer sent).
pub struct TokenReservation {
    _permit: OwnedSemaphorePermit,
}

/// Admission to the queue; held until the answer is sent.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Scheduler {
    /// Starts the queue actor (on the current tokio runtime) and the model thread.
    pub fn start(
        decoder: Arc<dyn Decoder>,
        budget: TokenBudget,
        limits: AdmissionLimits,
        metrics: Arc<Metrics>,
        name: &str,
    ) -> std::io::Result<Self> {
        let (jobs, job_rx) = mpsc::unbounded_channel();
        let (batch_requests, batch_request_rx) = mpsc::unbounded_channel();
        tokio::spawn(queue_actor(
            job_rx,
            batch_request_rx,
            budget,
            Arc::clone(&metrics),
        ));
        let thread_metrics = Arc::clone(&metrics);
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || model_loop(&*decoder, &batch_requests, &thread_metrics))?;
        // A semaphore counts at most u32::MAX permits at a time in one acquisition.
        let limits = AdmissionLimits {
            requests: limits.requests.max(1),
            tokens: limits.tokens.clamp(1, u32::MAX as usize),
        };
        Ok(Self {
            jobs,
            permits: Arc::new(Semaphore::new(limits.requests)),
            tokens: Arc::new(Semaphore::new(limits.tokens)),
            limits,
            metrics,
        })
    }

    /// A place in the queue, or `None` when `--max-concurrent-requests` are already in.
    pub fn admit(&self) -> Option<Admission> {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.metrics.rejected_overloaded.fetch_add(1, Relaxed);
            return None;
        };
        self.metrics.in_flight.fetch_add(1, Relaxed);
        Some(Admission {
            _permit: permit,
            metrics: Arc::clone(&self.metrics),
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Room for `tokens` more tokens in the queue, waiting up to `ADMISSION_WAIT` for it (in
    /// arrival order, so a large request is not passed over for ever by small ones); `None` when
    /// there is still no room. A request larger than the whole limit takes all of it.
    pub async fn reserve(&self, tokens: usize) -> Option<TokenReservation> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Some(permit) = reserve_within(&self.tokens, tokens, self.limits.tokens).await {
            return Some(TokenReservation { _permit: permit });
        }
        self.metrics.rejected_overloaded.fetch_add(1, Relaxed);
        None
    }

    /// Queues tokenized inputs; the answer arrives on the returned receiver, in input order.
    /// Dropping the receiver cancels the request if no batch has taken it yet.
    pub fn submit(&self, sequences: Vec<Vec<u32>>) -> oneshot::Receiver<BatchResult> {
        let (reply, answer) = oneshot::channel();
        if sequences.is_empty() {
            let _ = reply.send(Ok(Pooled::default()));
            return answer;
        }
        let entry = Entry {
            assembly: Arc::new(Assembly::new(sequences.len(), reply)),
            sequences,
            next: 0,
            enqueued: Instant::now(),
        };
        // If the actor is gone (shutting down), the entry and its sender drop: the receiver
        // sees a closed channel.
        let _ = self.jobs.send(entry);
        answer
    }
}

/// Owns the queue: appends new requests, and hands the model thread its next batch when it asks.
/// Ends when every `Scheduler` handle is gone and the queue is empty.
async fn queue_actor(
    mut jobs: mpsc::UnboundedReceiver<Entry>,
    mut batch_requests: mpsc::UnboundedReceiver<oneshot::Sender<Batch>>,
    budget: TokenBudget,
    metrics: Arc<Metrics>,
) {
    let mut queue = VecDeque::new();
    let mut waiting: Option<oneshot::Sender<Batch>> = None;
    let mut closed = false;
    loop {
        tokio::select! {
            job = jobs.recv(), if !closed => match job {
                Some(entry) => queue.push_back(entry),
                None => closed = true,
            },
            request = batch_requests.recv(), if waiting.is_none() => match request {
                Some(tx) => waiting = Some(tx),
                None => return, // the model thread is gone
            },
        }
        // Take everything already queued before forming a batch, so it can be merged.
        if !closed {
            while let Ok(entry) = jobs.try_recv() {
                queue.push_back(entry);
            }
        }
        if waiting.is_some() {
            if let Some(batch) = next_batch(&mut queue, budget, &metrics) {
                if let Err(batch) = waiting.take().map(|tx| tx.send(batch)).transpose() {
                    for piece in batch.pieces {
                        piece.assembly.fail("the model thread stopped");
                    }
                    return;
                }
            }
        }
        if closed && queue.is_empty() {
            return; // dropping `waiting` tells the model thread to stop
        }
    }
}

/// The model's own thread: asks for a batch, runs it, sends each request its pooled rows.
fn model_loop(
    decoder: &dyn Decoder,
    batch_requests: &mpsc::UnboundedSender<oneshot::Sender<Batch>>,
    metrics: &Metrics,
) {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        let (tx, rx) = oneshot::channel();
        if batch_requests.send(tx).is_err() {
            return;
        }
        let Ok(batch) = rx.blocking_recv() else {
            return;
        };
        let started = Instant::now();
        let mut sizes = Vec::with_capacity(batch.pieces.len());
        let mut sequences = Vec::new();
        let mut pieces = Vec::with_capacity(batch.pieces.len());
        for piece in batch.pieces {
            sizes.push(piece.sequences.len());
            sequences.extend(piece.sequences);
            pieces.push((piece.assembly, piece.start));
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            decoder
                .forward(&PackedBatch::new(&sequences))
                .map_err(|err| err.to_string())
        }))
        .unwrap_or_else(|_| Err("internal error: the model panicked".to_owned()));
        metrics.forward_duration.observe_duration(started.elapsed());
        metrics.batches.fetch_add(1, Relaxed);
        metrics.batch_sequences.observe(sequences.len() as f64);
        metrics.batch_requests.observe(pieces.len() as f64);
        metrics.batch_tokens.observe(batch.tokens as f64);
        match result {
            Ok(pooled) if pooled.rows() == sequences.len() => {
                metrics
                    .tokens_embedded
                    .fetch_add(batch.tokens as u64, Relaxed);
                metrics
                    .inputs_embedded
                    .fetch_add(sequences.len() as u64, Relaxed);
                let width = pooled.width();
                let mut rows = pooled.as_slice();
                for ((assembly, start), size) in pieces.into_iter().zip(sizes) {
                    let (these, rest) = rows.split_at(size * width);
                    assembly.fill(start, these, width);
                    rows = rest;
                }
            }
            Ok(_) => {
                for (assembly, _) in pieces {
                    assembly.fail("internal error: the model returned the wrong number of vectors");
                }
            }
            Err(message) => {
                tracing::error!("forward pass failed: {message}");
                for (assembly, _) in pieces {
                    assembly.fail(&message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A stand-in decoder: the pooled row of a sequence is `[sum of ids, length]`; it records
    /// the number of sequences of every batch it runs.
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<usize>>,
        delay_ms: u64,
        calls: AtomicUsize,
    }

    impl Decoder for Fake {
        fn forward(&self, batch: &PackedBatch) -> candle_embed_engine::Result<Pooled> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(self.delay_ms));
            self.batches.lock().unwrap().push(batch.num_sequences());
            if batch.input_ids.contains(&666) {
                return Err(candle_embed_engine::EngineError::Tokenizer(
                    "bad token".into(),
                ));
            }
            let values = batch
                .ranges()
                .flat_map(|r| {
                    let ids = &batch.input_ids[r.clone()];
                    [ids.iter().sum::<u32>() as f32, r.len() as f32]
                })
                .collect();
            Ok(Pooled::new(values, 2))
        }
    }

    fn expected(seqs: &[Vec<u32>]) -> Pooled {
        let values = seqs
            .iter()
            .flat_map(|s| [s.iter().sum::<u32>() as f32, s.len() as f32])
            .collect();
        Pooled::new(values, 2)
    }

    fn budget(tokens: usize) -> TokenBudget {
        TokenBudget::new(tokens)
    }

    fn limits(requests: usize) -> AdmissionLimits {
        AdmissionLimits {
            requests,
            tokens: 1 << 20,
        }
    }

    fn entry(seqs: Vec<Vec<u32>>) -> (Entry, oneshot::Receiver<BatchResult>) {
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            assembly: Arc::new(Assembly::new(seqs.len(), tx)),
            sequences: seqs,
            next: 0,
            enqueued: Instant::now(),
        };
        (entry, rx)
    }

    #[test]
    fn batches_merge_requests_and_split_large_ones() {
        let metrics = Metrics::default();
        let mut queue = VecDeque::new();
        let (a, _ra) = entry(vec![vec![1; 3], vec![2; 3]]);
        let (b, _rb) = entry(vec![vec![3; 2], vec![4; 4], vec![5; 4]]);
        queue.push_back(a);
        queue.push_back(b);
        // Budget 10: all of a (6) and b's first input (2), then b's second fits? 8 + 4 > 10.
        let first = next_batch(&mut queue, budget(10), &metrics).unwrap();
        assert_eq!(first.tokens, 8);
        assert_eq!(first.pieces.len(), 2);
        assert_eq!(first.pieces[1].start, 0);
        assert_eq!(first.pieces[1].sequences.len(), 1);
        let second = next_batch(&mut queue, budget(10), &metrics).unwrap();
        assert_eq!(second.tokens, 8);
        assert_eq!(second.pieces[0].start, 1);
        assert!(next_batch(&mut queue, budget(10), &metrics).is_none());
    }

    #[test]
    fn an_input_longer_than_the_budget_goes_alone() {
        let metrics = Metrics::default();
        let mut queue = VecDeque::new();
        let (a, _ra) = entry(vec![vec![1; 50], vec![1; 2]]);
        queue.push_back(a);
        assert_eq!(
            next_batch(&mut queue, budget(10), &metrics).unwrap().tokens,
            50
        );
        assert_eq!(
            next_batch(&mut queue, budget(10), &metrics).unwrap().tokens,
            2
        );
    }

    #[test]
    fn cancelled_requests_are_skipped() {
        let metrics = Metrics::default();
        let mut queue = VecDeque::new();
        let (a, ra) = entry(vec![vec![1; 3]]);
        let (b, _rb) = entry(vec![vec![2; 3]]);
        queue.push_back(a);
        queue.push_back(b);
        drop(ra);
        let batch = next_batch(&mut queue, budget(100), &metrics).unwrap();
        assert_eq!(batch.pieces.len(), 1);
        assert_eq!(batch.pieces[0].sequences, [vec![2; 3]]);
        assert_eq!(metrics.cancelled.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn split_answers_come_back_in_input_order() {
        let (tx, rx) = oneshot::channel();
        let assembly = Assembly::new(3, tx);
        assembly.fill(2, &[3.0, 30.0], 2);
        assembly.fill(0, &[1.0, 10.0, 2.0, 20.0], 2);
        assert_eq!(
            rx.blocking_recv().unwrap().unwrap(),
            Pooled::new(vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0], 2)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_merged_and_answered_exactly() {
        let fake = Arc::new(Fake {
            delay_ms: 5,
            ..Fake::default()
        });
        let metrics = Arc::new(Metrics::default());
        let scheduler = Arc::new(
            Scheduler::start(
                Arc::clone(&fake) as Arc<dyn Decoder>,
                budget(64),
                limits(1000),
                Arc::clone(&metrics),
                "t",
            )
            .unwrap(),
        );
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let scheduler = Arc::clone(&scheduler);
            tasks.push(tokio::spawn(async move {
                let _admitted = scheduler.admit().unwrap();
                let seqs: Vec<Vec<u32>> = (0..=(i % 5))
                    .map(|j| vec![i + j; 1 + ((i + j) % 40) as usize])
                    .collect();
                let got = scheduler.submit(seqs.clone()).await.unwrap().unwrap();
                assert_eq!(got, expected(&seqs));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let batches = fake.batches.lock().unwrap().clone();
        assert!(batches.iter().any(|&n| n > 1), "{batches:?}");
        assert!(metrics.batch_requests.count() > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn model_errors_reach_only_their_batch_and_the_queue_goes_on() {
        let fake = Arc::new(Fake::default());
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::start(
            Arc::clone(&fake) as Arc<dyn Decoder>,
            budget(8),
            limits(10),
            metrics,
            "t",
        )
        .unwrap();
        let bad = scheduler.submit(vec![vec![666]]).await.unwrap();
        assert!(bad.unwrap_err().contains("bad token"));
        let good = scheduler.submit(vec![vec![1, 2]]).await.unwrap().unwrap();
        assert_eq!(good, Pooled::new(vec![3.0, 2.0], 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admission_is_bounded() {
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::start(
            Arc::new(Fake::default()),
            budget(8),
            limits(2),
            Arc::clone(&metrics),
            "t",
        )
        .unwrap();
        let a = scheduler.admit();
        let b = scheduler.admit();
        assert!(a.is_some() && b.is_some());
        assert!(scheduler.admit().is_none());
        drop(a);
        assert!(scheduler.admit().is_some());
        assert_eq!(metrics.rejected_overloaded.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.in_flight.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokens_in_flight_are_bounded_and_returned() {
        let metrics = Arc::new(Metrics::default());
        let scheduler = Scheduler::start(
            Arc::new(Fake::default()),
            budget(8),
            AdmissionLimits {
                requests: 10,
                tokens: 100,
            },
            Arc::clone(&metrics),
            "t",
        )
        .unwrap();
        let sixty = scheduler.reserve(60).await.unwrap();
        assert!(
            scheduler.reserve(41).await.is_none(),
            "60 + 41 passes the limit"
        );
        let forty = scheduler.reserve(40).await.unwrap();
        assert!(scheduler.reserve(1).await.is_none());
        assert_eq!(metrics.rejected_overloaded.load(Ordering::Relaxed), 2);
        // Larger than the whole limit: it waits for the queue to empty, then takes all of it.
        let scheduler = Arc::new(scheduler);
        let big = tokio::spawn({
            let scheduler = Arc::clone(&scheduler);
            async move { scheduler.reserve(1_000).await.is_some() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(sixty);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(forty);
        assert!(
            big.await.unwrap(),
            "the large request got in once the queue emptied"
        );
        assert!(
            scheduler.reserve(100).await.is_some(),
            "its tokens came back"
        );
    }
}
