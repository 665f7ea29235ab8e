//! Queries from outside — `POST /v1/query`, the saved queries over HTTP, `nhiwatch query` — run
//! in a child process, one per query, so that nothing a query does can take the service down.
//!
//! Why a process and not a thread (issue 19): a query can fail in ways a process cannot survive.
//! An allocation that fails aborts the process (`repeat(x, 2000000000)`, `array_repeat` nested:
//! DataFusion's memory pool sees operators' buffers, not what scalar functions allocate); a
//! stack overflow aborts it; a kernel that runs for minutes inside one poll cannot be cancelled by
//! a timer. In the child all three are contained: its data segment is capped with
//! `RLIMIT_DATA` (`archive.query_memory_bytes` plus [`PROCESS_OVERHEAD`]), its CPU time with
//! `RLIMIT_CPU` as a backstop, it runs at a lower priority than ingestion, and at the time limit
//! the parent kills it — the query stops, not just the response. Its memory goes back to the
//! system when it ends. In the child a query passes [`super::gate`] before planning, so most
//! refusals are clear errors before DataFusion does any work.
//!
//! The cost is a process start per query (a few milliseconds) and the answer crossing a pipe as
//! Arrow IPC. At most `archive.query_concurrency` run at once; the API answers 429 beyond that.
//!
//! The protocol: the parent writes a [`Job`] as JSON to the child's stdin and closes it; the
//! child answers on stdout with one JSON line ([`Outcome`]) and, for an answer, the Arrow IPC
//! stream of its rows. A child that dies instead is judged by its exit status and stderr.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use super::{Answer, Limits, QueryError, Sql};

/// The hidden subcommand that runs one query: `nhiwatch query-worker`.
pub const WORKER_COMMAND: &str = "query-worker";

/// What the query process needs for itself on top of `archive.query_memory_bytes`: its runtime,
/// thread stacks, the allocator's reserve and the archive's file listing.
pub const PROCESS_OVERHEAD: u64 = 512 << 20;

/// Largest answer carried back (Arrow IPC bytes); larger ones are refused as `query_memory`.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Share of `archive.query_memory_bytes` given to DataFusion's pool (sorts, joins,
/// aggregations); the rest is for what the pool does not see (scalar functions' results,
/// Parquet decoding, the answer).
const POOL_SHARE: (usize, usize) = (3, 4);

const MAX_STDERR: usize = 64 << 10;
const MAX_JOB: u64 = 64 << 20;
/// Stack of the thread that plans the query, and of the runtime's workers.
const PLANNER_STACK: usize = 64 << 20;
const WORKER_STACK: usize = 16 << 20;

/// One query for the child.
#[derive(Debug, Serialize, Deserialize)]
struct Job {
    location: String,
    registry: Option<PathBuf>,
    limits: Limits,
    sql: String,
    params: BTreeMap<String, Value>,
}

/// The child's first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    /// Rows follow as an Arrow IPC stream.
    Answer { truncated: bool },
    /// The query was refused or failed; nothing follows.
    Refused { kind: Refusal, message: String },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Refusal {
    NotAllowed,
    TooComplex,
    Timeout,
    Memory,
    Invalid,
    NoArchive,
    Archive,
    Failed,
}

/// Runs queries over one archive, each in its own process.
#[derive(Debug)]
pub struct Sandbox {
    worker: PathBuf,
    location: String,
    registry: Option<PathBuf>,
    limits: Limits,
    slots: Arc<Semaphore>,
    concurrency: usize,
}

impl Sandbox {
    /// Queries over the archive at `location` (with the registry file as the table
    /// `integrations`), run by `worker` (an `nhiwatch` executable: the running one in the
    /// service), at most `concurrency` at once, each within `limits` (`memory_bytes` is the
    /// whole query's: see [`POOL_SHARE`]).
    pub fn new(
        worker: PathBuf,
        location: &str,
        registry: Option<PathBuf>,
        limits: Limits,
        concurrency: usize,
    ) -> Sandbox {
        let concurrency = concurrency.max(1);
        Sandbox {
            worker,
            location: location.to_owned(),
            registry,
            limits,
            slots: Arc::new(Semaphore::new(concurrency)),
            concurrency,
        }
    }

    /// Queries from outside over the archive at `location`, each in a process of this
    /// executable, under `[archive]`'s limits and concurrency.
    pub fn for_archive(
        location: &str,
        registry: Option<PathBuf>,
        cfg: &crate::archive::ArchiveConfig,
    ) -> std::io::Result<Sandbox> {
        Ok(Sandbox::new(
            std::env::current_exe()?,
            location,
            registry,
            Limits::of(cfg),
            cfg.query_concurrency,
        ))
    }

    /// The limits of each query.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How many queries may run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Runs `sql`, waiting for a free slot.
    pub async fn query(&self, sql: &str, params: &BTreeMap<String, Value>) -> Result<Answer, QueryError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| QueryError::Failed(e.to_string()))?;
        self.run(sql, params).await
    }

    /// Runs `sql` if a slot is free; [`QueryError::Busy`] if not.
    pub async fn try_query(&self, sql: &str, params: &BTreeMap<String, Value>) -> Result<Answer, QueryError> {
        let _slot = self
            .slots
            .try_acquire()
            .map_err(|_| QueryError::Busy(self.concurrency))?;
        self.run(sql, params).await
    }

    async fn run(&self, sql: &str, params: &BTreeMap<String, Value>) -> Result<Answer, QueryError> {
        let job = serde_json::to_vec(&Job {
            location: self.location.clone(),
            registry: self.registry.clone(),
            limits: self.limits,
            sql: sql.to_owned(),
            params: params.clone(),
        })
        .map_err(|e| QueryError::Failed(e.to_string()))?;
        let mut child = tokio::process::Command::new(&self.worker)
            .arg(WORKER_COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RUST_BACKTRACE", "0")
            // mimalloc reserves 1 GiB of address space at start, which counts against the
            // data limit: the query process takes its memory as it needs it.
            .env("MIMALLOC_ARENA_RESERVE", "0")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| QueryError::Failed(format!("starting the query process {}: {e}", self.worker.display())))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(QueryError::Failed("the query process has no pipes".into()));
        };
        let exchange = async {
            let write = async move {
                // A child that refuses early closes its stdin: its answer says why.
                let _ = stdin.write_all(&job).await;
            };
            let read = async {
                let out = read_at_most(stdout, MAX_ANSWER_BYTES).await;
                if out.is_none() {
                    // Stop it: it would block on a full pipe until the time limit.
                    let _ = child.start_kill();
                }
                out
            };
            let (_, out, err) = tokio::join!(write, read, read_prefix(stderr, MAX_STDERR));
            (out, err)
        };
        let Ok((out, err)) = tokio::time::timeout(self.limits.timeout, exchange).await else {
            let _ = child.kill().await;
            return Err(QueryError::Timeout(self.limits.timeout));
        };
        let Some(out) = out else {
            let _ = child.kill().await;
            return Err(QueryError::Memory(format!(
                "the answer is larger than {} MiB: select fewer rows or columns",
                MAX_ANSWER_BYTES >> 20
            )));
        };
        let status = child.wait().await.map_err(|e| QueryError::Failed(e.to_string()))?;
        let err = String::from_utf8_lossy(&err).into_owned();
        self.answer(&out, status, &err)
    }

    fn answer(&self, out: &[u8], status: ExitStatus, stderr: &str) -> Result<Answer, QueryError> {
        let (head, rows) = match out.iter().position(|&b| b == b'\n') {
            Some(i) => (&out[..i], &out[i + 1..]),
            None => (out, &[][..]),
        };
        match serde_json::from_slice::<Outcome>(head) {
            Ok(Outcome::Answer { truncated }) if status.success() => {
                let reader = StreamReader::try_new(std::io::Cursor::new(rows), None)
                    .map_err(|e| QueryError::Failed(format!("reading the answer: {e}")))?;
                let schema = reader.schema();
                let batches = reader
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| QueryError::Failed(format!("reading the answer: {e}")))?;
                Ok(Answer {
                    schema,
                    batches,
                    truncated,
                })
            }
            Ok(Outcome::Refused { kind, message }) => Err(match kind {
                Refusal::NotAllowed => QueryError::NotAllowed(message),
                Refusal::TooComplex => QueryError::TooComplex(message),
                Refusal::Timeout => QueryError::Timeout(self.limits.timeout),
                Refusal::Memory => QueryError::Memory(message),
                Refusal::Invalid => QueryError::Invalid(message),
                Refusal::NoArchive => QueryError::NoArchive(self.location.clone()),
                Refusal::Archive => QueryError::Archive {
                    location: self.location.clone(),
                    message,
                },
                Refusal::Failed => QueryError::Failed(message),
            }),
            _ => Err(self.died(status, stderr)),
        }
    }

    /// What a child that ended without an answer ran into.
    fn died(&self, status: ExitStatus, stderr: &str) -> QueryError {
        const SIGKILL: i32 = 9;
        const SIGXCPU: i32 = 24;
        if stderr.contains("memory allocation of") || status.signal() == Some(SIGKILL) {
            return QueryError::Memory(format!(
                "it needed more than archive.query_memory_bytes ({} MiB) and was stopped",
                self.limits.memory_bytes >> 20
            ));
        }
        if stderr.contains("has overflowed its stack") {
            return QueryError::TooComplex("the query nests too deep to plan".into());
        }
        if status.signal() == Some(SIGXCPU) {
            return QueryError::Timeout(self.limits.timeout);
        }
        if let Some(at) = stderr.find("panicked at") {
            let message = stderr[at..].lines().nth(1).unwrap_or_default().trim();
            return QueryError::Failed(format!("the query failed inside the query engine: {message}"));
        }
        QueryError::Failed(format!("the query process ended with {status} and no answer"))
    }
}

/// Reads `r` to its end and keeps its first `cap` bytes: the rest is read and dropped, so that
/// a writer is never blocked on a full pipe.
async fn read_prefix(mut r: impl AsyncRead + Unpin, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&chunk[..room]);
    }
    kept
}

/// Reads `r` to its end, or `None` once it holds more than `cap` bytes.
async fn read_at_most(r: impl AsyncRead + Unpin, cap: usize) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let n = r.take(cap as u64 + 1).read_to_end(&mut buf).await.ok()?;
    (n <= cap).then_some(buf)
}

/// `nhiwatch query-worker`: reads one [`Job`] from stdin, runs it under the process limits and
/// writes the [`Outcome`] and rows to stdout.
pub fn worker() -> ExitCode {
    let mut text = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_JOB).read_to_end(&mut text) {
        eprintln!("reading the query: {e}");
        return ExitCode::FAILURE;
    }
    let job: Job = match serde_json::from_slice(&text) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("not a query job: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = confine(&job.limits) {
        return reply(&Err(QueryError::Failed(format!(
            "setting the query process limits: {e}"
        ))));
    }
    let result = std::thread::Builder::new()
        .name("query".into())
        .stack_size(PLANNER_STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(WORKER_STACK)
                .enable_all()
                .build()
                .map_err(|e| QueryError::Failed(e.to_string()))?;
            runtime.block_on(execute(job))
        })
        .map_err(|e| QueryError::Failed(e.to_string()))
        .and_then(|t| {
            // A panic has been printed to stderr by the hook: the parent reads it there.
            t.join().map_err(|_| QueryError::Failed("the query panicked".into()))?
        });
    reply(&result)
}

/// Caps the process: its data segment, its CPU time (a backstop: the parent kills it at the time
/// limit), and a lower priority than the service's own threads. Limits are held within what the
/// service itself was given (a hard limit cannot be raised); a priority already lower stays.
fn confine(limits: &Limits) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, getpriority_process, getrlimit, setpriority_process, setrlimit};
    let cap = |resource: Resource, want: u64| -> std::io::Result<()> {
        let hard = getrlimit(resource).maximum;
        let value = hard.map_or(want, |h| want.min(h));
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: hard,
            },
        )?;
        Ok(())
    };
    // On top of what the process holds already (the allocator's reserve, the executable's data).
    cap(
        Resource::Data,
        data_segment() + limits.memory_bytes as u64 + PROCESS_OVERHEAD,
    )?;
    // Two runtime threads: twice the wall time, and a margin to start.
    cap(Resource::Cpu, limits.timeout.as_secs() * 2 + 10)?;
    let nice = getpriority_process(None).unwrap_or(0).max(10);
    // Not worth refusing the query over: the time limit still holds.
    let _ = setpriority_process(None, nice);
    Ok(())
}

/// The process's data segment now (`VmData`), in bytes; 0 if unknown.
fn data_segment() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmData:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

async fn execute(job: Job) -> Result<Answer, QueryError> {
    // `Sql::query` passes the query through `gate::check` before planning.
    let pool = Limits {
        memory_bytes: (job.limits.memory_bytes / POOL_SHARE.1 * POOL_SHARE.0).max(1 << 20),
        // The parent kills at the limit; this stops a query that yields first.
        timeout: job.limits.timeout + Duration::from_secs(1),
        ..job.limits
    };
    let sql = Sql::open(&job.location, pool).await?;
    if let Some(path) = &job.registry {
        let registry = crate::registry::Registry::load(path).map_err(|e| QueryError::Archive {
            location: path.display().to_string(),
            message: e.to_string(),
        })?;
        sql.register_registry(&registry)?;
    }
    sql.query(&job.sql, &super::param_values(&job.params)?).await
}

fn reply(result: &Result<Answer, QueryError>) -> ExitCode {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = (|| -> Result<(), Box<dyn std::error::Error>> {
        match result {
            Ok(answer) => {
                serde_json::to_writer(
                    &mut out,
                    &Outcome::Answer {
                        truncated: answer.truncated,
                    },
                )?;
                out.write_all(b"\n")?;
                let mut w = StreamWriter::try_new(&mut out, &answer.schema)?;
                for b in &answer.batches {
                    w.write(b)?;
                }
                w.finish()?;
            }
            Err(e) => {
                let kind = match e {
                    QueryError::NotAllowed(_) => Refusal::NotAllowed,
                    QueryError::TooComplex(_) => Refusal::TooComplex,
                    QueryError::Timeout(_) => Refusal::Timeout,
                    QueryError::Memory(_) => Refusal::Memory,
                    QueryError::Invalid(_) => Refusal::Invalid,
                    QueryError::NoArchive(_) => Refusal::NoArchive,
                    QueryError::Archive { .. } => Refusal::Archive,
                    QueryError::Busy(_) | QueryError::Failed(_) => Refusal::Failed,
                };
                let message = match e {
                    QueryError::NotAllowed(m)
                    | QueryError::TooComplex(m)
                    | QueryError::Memory(m)
                    | QueryError::Invalid(m)
                    | QueryError::Failed(m) => m.clone(),
                    QueryError::Archive { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                serde_json::to_writer(&mut out, &Outcome::Refused { kind, message })?;
                out.write_all(b"\n")?;
            }
        }
        out.flush()?;
        Ok(())
    })();
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing the answer: {e}");
            ExitCode::FAILURE
        }
    }
}
