//! Read-only SQL over the archive, with DataFusion.
//!
//! Two tables: `events` and `findings` (see `crate::archive::schema`), each with the partition
//! column `date` (`'YYYY-MM-DD'`, the event day: filter on it and whole days are skipped). The
//! surface is read-only and bounded: DDL, DML and other statements (`CREATE EXTERNAL TABLE`,
//! `COPY`, `INSERT`, `SET`…) are refused by the planner, file paths are not tables (DataFusion's
//! URL tables stay off), each query runs under a time limit and a memory pool, and results are
//! capped at a row count. Parameters are bound as values (`$name`), never spliced into text.
//!
//! Functions besides DataFusion's own: `scope_contains(granted, used)` is true when the SMART
//! scope `granted` covers `used` (`system/*.rs` covers `system/Observation.read`).

pub mod gate;
pub mod sandbox;
pub mod saved;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col};

use crate::archive::schema::{event_schema, finding_schema};
use crate::registry::{Integration, Registry};
use crate::scope::Scope;

/// A query's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Longest run time.
    pub timeout: Duration,
    /// Memory pool size in bytes.
    pub memory_bytes: usize,
    /// Most rows returned.
    pub max_rows: usize,
}

impl Limits {
    /// The limits `[archive]` sets for queries from outside.
    pub fn of(cfg: &crate::archive::ArchiveConfig) -> Limits {
        Limits {
            timeout: Duration::from_secs(cfg.query_timeout_seconds),
            memory_bytes: cfg.query_memory_bytes,
            max_rows: cfg.max_result_rows,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 4 << 30,
            max_rows: 100_000,
        }
    }
}

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not a query (writes, DDL, settings).
    #[error("only queries are allowed: {0}")]
    NotAllowed(String),
    /// It ran longer than the limit.
    #[error("the query ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// It needed more memory than the limit.
    #[error("the query needs more memory than allowed: {0}")]
    Memory(String),
    /// It is too large or nested too deep to plan safely ([`gate`]).
    #[error("the query is too complex: {0}")]
    TooComplex(String),
    /// As many queries as allowed are running.
    #[error("{0} queries are running already (archive.query_concurrency); try again shortly")]
    Busy(usize),
    /// The query engine failed (a panic or a crash of the query process).
    #[error("{0}")]
    Failed(String),
    /// Anything else the planner or executor said (syntax, unknown column…).
    #[error("{0}")]
    Invalid(String),
    /// Nothing has been archived at the location: a mistyped path or URL, or an archive never
    /// written. Read-only commands say so instead of answering from an empty table.
    #[error("no archive at {0}: no events/ or findings/ partitions (check the path or `archive.location`)")]
    NoArchive(String),
    /// The archive could not be opened.
    #[error("archive {location}: {message}")]
    Archive {
        /// As given.
        location: String,
        /// Why.
        message: String,
    },
}

impl From<datafusion::error::DataFusionError> for QueryError {
    fn from(e: datafusion::error::DataFusionError) -> QueryError {
        use datafusion::error::DataFusionError as E;
        match e.find_root() {
            E::ResourcesExhausted(m) => QueryError::Memory(m.clone()),
            E::Plan(m)
                if m.contains("not supported") || m.contains("DDL") || m.contains("DML") || m.contains("Statement") =>
            {
                QueryError::NotAllowed(m.clone())
            }
            E::ExecutionJoin(m) => QueryError::Failed(format!("the query failed inside the query engine: {m}")),
            other => QueryError::Invalid(other.to_string()),
        }
    }
}

/// `batch` with every nested column (lists, structs, maps) as JSON text, which CSV can carry
/// (Arrow's CSV writer refuses nested types: a 500 in issue 19). Other columns are kept.
pub fn for_csv(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let one = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("v", field.data_type().clone(), true)])),
            vec![Arc::clone(column)],
        )?;
        let mut lines = Vec::new();
        let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut lines);
        w.write(&one)?;
        w.finish()?;
        drop(w);
        let mut text = StringBuilder::with_capacity(column.len(), lines.len());
        for line in lines.split(|&b| b == b'\n').take(column.len()) {
            let row: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| datafusion::arrow::error::ArrowError::JsonError(e.to_string()))?;
            match row.get("v") {
                Some(v) if !v.is_null() => text.append_value(v.to_string()),
                _ => text.append_null(),
            }
        }
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(text.finish()) as ArrayRef);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// `batch` fit for a terminal table: nested columns as JSON text ([`for_csv`]) and control and
/// bidi characters of every text escaped ([`crate::terminal::escape`]), so that a value from a
/// record cannot forge table rows or drive the terminal.
pub fn for_terminal(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::compute::cast;
    let batch = for_csv(batch)?;
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            fields.push(Arc::clone(field));
            columns.push(Arc::clone(column));
            continue;
        }
        let text = cast(column, &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let escaped: datafusion::arrow::array::StringArray = text
            .iter()
            .map(|v| v.map(|v| crate::terminal::escape(v).into_owned()))
            .collect();
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
        columns.push(Arc::new(escaped) as ArrayRef);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// A `$name` parameter's value from JSON: a string, number or boolean.
pub fn param_value(name: &str, v: &serde_json::Value) -> Result<ScalarValue, QueryError> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        _ => {
            return Err(QueryError::Invalid(format!(
                "parameter {name}: must be a string, number or boolean"
            )));
        }
    })
}

/// Every parameter's value (see [`param_value`]).
pub fn param_values(
    params: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<HashMap<String, ScalarValue>, QueryError> {
    params
        .iter()
        .map(|(k, v)| Ok((k.clone(), param_value(k, v)?)))
        .collect()
}

/// A query's result.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Result schema.
    pub schema: SchemaRef,
    /// Result rows.
    pub batches: Vec<RecordBatch>,
    /// True when more rows matched than `max_rows` (only the first are returned).
    pub truncated: bool,
}

impl Answer {
    /// Rows returned.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// SQL over one archive.
pub struct Sql {
    ctx: SessionContext,
    limits: Limits,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn registry_batch(registry: &Registry) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let time = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("seen_as", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("owner", DataType::Utf8, true),
        Field::new("purpose", DataType::Utf8, true),
        Field::new(
            "approved_scopes",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("onboarded_at", time(), true),
        Field::new("expires_at", time(), true),
        Field::new("offboarded_at", time(), true),
    ]));
    let rows: Vec<(&Integration, &str)> = registry
        .entries()
        .iter()
        .flat_map(|i| {
            std::iter::once(i.id.as_str())
                .chain(i.aliases.iter().map(String::as_str))
                .map(move |n| (i, n))
        })
        .collect();
    let text = |f: &dyn Fn(&Integration, &str) -> Option<String>| {
        let mut b = StringBuilder::new();
        for (i, n) in &rows {
            b.append_option(f(i, n));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let when = |f: &dyn Fn(&Integration) -> Option<chrono::DateTime<chrono::Utc>>| {
        let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        for (i, _) in &rows {
            b.append_option(f(i).map(|t| t.timestamp_micros()));
        }
        Arc::new(b.finish()) as ArrayRef
    };
    let mut scopes = ListBuilder::new(StringBuilder::new());
    for (i, _) in &rows {
        for s in &i.approved_scopes {
            scopes.values().append_value(s.to_string());
        }
        scopes.append(true);
    }
    RecordBatch::try_new(
        schema,
        vec![
            text(&|i, _| Some(i.id.clone())),
            text(&|_, n| Some(n.to_owned())),
            text(&|i, _| i.name.clone()),
            text(&|i, _| i.owner.clone()),
            text(&|i, _| i.purpose.clone()),
            Arc::new(scopes.finish()),
            when(&|i| i.onboarded_at),
            when(&|i| i.expires_at),
            when(&|i| i.offboarded_at),
        ],
    )
}

fn scope_contains() -> ScalarUDF {
    create_udf(
        "scope_contains",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (granted, used) = (arrays[0].as_string::<i32>(), arrays[1].as_string::<i32>());
            let mut out = BooleanBuilder::with_capacity(granted.len());
            for i in 0..granted.len() {
                if granted.is_null(i) || used.is_null(i) {
                    out.append_null();
                } else {
                    out.append_value(Scope::parse(granted.value(i)).contains(&Scope::parse(used.value(i))));
                }
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

/// `t` with every `Utf8` in it (inside lists and structs too) as `Utf8View`, or the reverse.
fn with_strings(t: &DataType, view: bool) -> DataType {
    let field = |f: &Field| f.clone().with_data_type(with_strings(f.data_type(), view));
    match t {
        DataType::Utf8 if view => DataType::Utf8View,
        DataType::Utf8View if !view => DataType::Utf8,
        DataType::List(f) => DataType::List(Arc::new(field(f))),
        DataType::LargeList(f) => DataType::LargeList(Arc::new(field(f))),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(Arc::new(field(f)), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(|f| field(f)).collect()),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(with_strings(v, view))),
        other => other.clone(),
    }
}

fn strings_as(schema: &Schema, view: bool) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(with_strings(f.data_type(), view)))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// A table schema with its strings read as views.
fn view_types(schema: &SchemaRef) -> SchemaRef {
    strings_as(schema, true)
}

/// `batch` with every string view column cast to `Utf8` (a batch without one as it is).
pub fn plain(batch: &RecordBatch) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let schema = strings_as(&batch.schema(), false);
    if schema.fields() == batch.schema().fields() {
        return Ok(batch.clone());
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

/// `$from` and `$to` bound to the bounds of a period, as RFC 3339 text.
pub fn period(from: chrono::DateTime<chrono::Utc>, to: chrono::DateTime<chrono::Utc>) -> HashMap<String, ScalarValue> {
    let rfc = |t: chrono::DateTime<chrono::Utc>| {
        ScalarValue::Utf8(Some(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
    };
    HashMap::from([("from".to_owned(), rfc(from)), ("to".to_owned(), rfc(to))])
}

impl Sql {
    /// Opens the archive at `location` (a directory or object-store URL) for queries; refuses
    /// a location with neither an `events/` nor a `findings/` table (nothing is created).
    pub async fn open(location: &str, limits: Limits) -> Result<Sql, QueryError> {
        let bad = |message: String| QueryError::Archive {
            location: location.to_owned(),
            message,
        };
        let store = match crate::archive::existing(location).await {
            Ok(Some(store)) => store,
            Ok(None) => return Err(QueryError::NoArchive(location.to_owned())),
            Err(e) => return Err(bad(e.to_string())),
        };
        let base = if location.contains("://") {
            location.trim_end_matches('/').to_owned()
        } else {
            let abs = std::fs::canonicalize(location).map_err(|e| bad(e.to_string()))?;
            format!("file://{}", abs.display())
        };
        // A hard memory limit: no spilling to temporary files (which would also put archive
        // data outside the archive).
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()
            .map_err(|e| bad(e.to_string()))?;
        let mut options = ConfigOptions::new();
        options.execution.target_partitions = 2;
        // Filters are not pushed into the Parquet decoder: the compliance queries filter on
        // predicates most rows pass (kind, outcome, a period spanning the files), where
        // evaluating them row by row while decoding cost more than it saved (least_privilege
        // 369 → 249 ms, phi_access 615 → 445 ms on 1.14M events; issue 22). Row-group statistics
        // and the page index still skip what a selective identity or day filter excludes.
        options.execution.parquet.pushdown_filters = false;
        let ctx = SessionContext::new_with_config_rt(SessionConfig::from(options), runtime);
        if location.contains("://") {
            let url = url::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
            ctx.register_object_store(&url, store);
        }
        for (name, schema, sort) in [
            (
                "events",
                event_schema(),
                vec![col("identity").sort(true, false), col("time").sort(true, false)],
            ),
            (
                "findings",
                finding_schema(),
                vec![col("identity").sort(true, false), col("event_time").sort(true, false)],
            ),
        ] {
            let url = ListingTableUrl::parse(format!("{base}/{name}/")).map_err(|e| bad(e.to_string()))?;
            let opts = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![("date".into(), DataType::Utf8)])
                .with_file_sort_order(vec![sort]);
            // Strings are read as views (no copy of each value into a new buffer): a further
            // 10–20% off the scan-heavy queries (issue 22). Answers leave as plain `Utf8`
            // ([`plain`]), the types every reader of them was written for.
            let config = ListingTableConfig::new(url)
                .with_listing_options(opts)
                .with_schema(view_types(&schema));
            let table = ListingTable::try_new(config).map_err(|e| bad(e.to_string()))?;
            ctx.register_table(name, Arc::new(table))
                .map_err(|e| bad(e.to_string()))?;
        }
        ctx.register_udf(scope_contains());
        Ok(Sql { ctx, limits })
    }

    /// Adds the identity registry as the table `integrations`: one row per name an integration
    /// is seen under (`seen_as`: its id and each alias), with `id`, `name`, `owner`, `purpose`,
    /// `approved_scopes`, `onboarded_at`, `expires_at`, `offboarded_at`.
    pub fn register_registry(&self, registry: &Registry) -> Result<(), QueryError> {
        let batch = registry_batch(registry).map_err(|e| QueryError::Invalid(e.to_string()))?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        self.ctx.register_table("integrations", Arc::new(table))?;
        Ok(())
    }

    /// Hands the archived events of `[from, to)` to `each`, one event day at a time, in the
    /// order the engine takes them live (time, then event id); returns how many there were.
    /// Not row-capped or timed like a query (an operator's replay), but under the memory pool.
    pub async fn events_in(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        mut each: impl FnMut(&str, Vec<crate::event::Event>) -> Result<(), QueryError>,
    ) -> Result<u64, QueryError> {
        use futures_util::StreamExt as _;
        let mut params = period(from, to);
        let read_only = || {
            SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false)
        };
        let days = self
            .ctx
            .sql_with_options(
                "SELECT DISTINCT date FROM events WHERE date >= substr($from, 1, 10) AND date <= substr($to, 1, 10) ORDER BY date",
                read_only(),
            )
            .await?
            .with_param_values(params.clone())?
            .collect()
            .await?;
        let days: Vec<String> = days
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_string::<i32>();
                (0..a.len()).map(|i| a.value(i).to_owned()).collect::<Vec<_>>()
            })
            .collect();
        let mut n = 0;
        for day in days {
            params.insert("day".into(), ScalarValue::Utf8(Some(day.clone())));
            let mut stream = self
                .ctx
                .sql_with_options(
                    "SELECT * FROM events WHERE date = $day AND time >= $from AND time < $to ORDER BY time, event_id",
                    read_only(),
                )
                .await?
                .with_param_values(params.clone())?
                .execute_stream()
                .await?;
            let mut events = Vec::new();
            while let Some(batch) = stream.next().await {
                let batch = plain(&batch?).map_err(|e| QueryError::Failed(e.to_string()))?;
                events.extend(crate::archive::schema::events_from_batch(&batch).map_err(QueryError::Invalid)?);
            }
            n += events.len() as u64;
            each(&day, events)?;
        }
        Ok(n)
    }

    /// The findings archived for `[from, to)` (by first event), each in its latest archived
    /// state (highest count, then latest event, then latest detection).
    pub async fn findings_in(
        &self,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<crate::findings::Finding>, QueryError> {
        let answer = self
            .query(
                "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY count DESC, last_event_time DESC, detected_at DESC) AS rn \
                 FROM findings WHERE event_time >= $from AND event_time < $to) WHERE rn = 1 ORDER BY event_time, id",
                &period(from, to),
            )
            .await?;
        let mut out = Vec::new();
        for b in &answer.batches {
            out.extend(crate::archive::schema::findings_from_batch(b).map_err(QueryError::Invalid)?);
        }
        Ok(out)
    }

    /// Runs one read-only query with `$name` parameters bound to `params`.
    pub async fn query(&self, sql: &str, params: &HashMap<String, ScalarValue>) -> Result<Answer, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        gate::check(sql)?;
        let run = async {
            let mut df = self.ctx.sql_with_options(sql, options).await?;
            if !params.is_empty() {
                df = df.with_param_values(params.clone())?;
            }
            let schema = strings_as(df.schema().as_arrow(), false);
            // An EXPLAIN's plan rows are few, and a limit over them is not a plan DataFusion
            // can explain ("internal error" in issue 19).
            let explain = matches!(
                df.logical_plan(),
                datafusion::logical_expr::LogicalPlan::Explain(_) | datafusion::logical_expr::LogicalPlan::Analyze(_)
            );
            let df = if explain {
                df
            } else {
                df.limit(0, Some(self.limits.max_rows + 1))?
            };
            let batches = df
                .collect()
                .await?
                .iter()
                .map(plain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueryError::Failed(e.to_string()))?;
            Ok::<_, QueryError>((schema, batches))
        };
        let (schema, mut batches) = tokio::time::timeout(self.limits.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.limits.timeout))??;
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let truncated = total > self.limits.max_rows;
        if truncated {
            let mut keep = self.limits.max_rows;
            batches = batches
                .into_iter()
                .filter_map(|b| {
                    let n = b.num_rows().min(keep);
                    keep -= n;
                    (n > 0).then(|| b.slice(0, n))
                })
                .collect();
        }
        Ok(Answer {
            schema,
            batches,
            truncated,
        })
    }
}
