//! `make bench`: the pipeline's rates next to the raw rates of what it is
//! built on, on the local stack, with release builds. Prints a table and
//! writes `target/bench/results.json` (machine, date, git sha).
//!
//! Settings (environment): `BENCH_CONCURRENCY` (32), `BENCH_RAW_OPS` (raw
//! S3 and broker operations, 5000), `BENCH_FILES` (files the api ingests
//! and the processor drains, 20000), `BENCH_E2E_SECONDS` (20),
//! `BENCH_STREAM_CLIENTS` (16) uploads of `BENCH_STREAM_MIB` (200) each made
//! of companies of `BENCH_STREAM_COMPANY_KIB` (64) for the api's memory;
//! `BENCH_WRK_CONNECTIONS` (64) and `BENCH_WRK_SECONDS` (15) for the flat
//! load phase; `BENCH_PROFILE` (`api` or `processor`, unset) to profile one
//! service. The tuning settings in `settings::SERVICE_KNOBS`, when set, are
//! passed on to the services (which otherwise run with their defaults).
//! `BENCH_OTLP_SINK=1` starts an OTLP receiver in the bench and has the
//! services export their traces to it (with `OTEL_TRACES_SAMPLER` /
//! `_ARG` for the sampling); `OTEL_EXPORTER_OTLP_ENDPOINT` names another.

mod cpu;
mod limits;
mod pipeline;
mod profile;
mod refusals;
mod report;
mod run;
mod settings;
mod stats;
mod streaming;
mod summary;
mod wrk;

use etl_testkit::{OtlpReceiver, ServiceProcess, TestEnv};

use crate::refusals::Refusals;
use crate::run::Pace;
use crate::settings::Settings;
use crate::stats::Phase;
use crate::streaming::Streamed;
use crate::summary::Results;

/// How long the raw phases paced at the api's rate run.
const PACED_SECONDS: f64 = 10.0;

/// The number of the flat load phase's first company: above every other
/// phase's, so each of its companies is new.
const WRK_FIRST: u64 = 100_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let interrupted = etl_core::shutdown::on_signal();
    // Out of the select, the run is dropped and with it the services it
    // started (each is killed when dropped), so none is left behind.
    let finished = tokio::select! {
        result = run() => Some(result),
        () = interrupted.cancelled() => None,
    };
    finished.unwrap_or_else(|| {
        eprintln!("[bench] interrupted; the services it started are stopped");
        std::process::exit(130)
    })
}

/// What every phase is given: the settings, the test's slice of the
/// stack, the CPU meter and the services' settings.
struct Bench {
    settings: Settings,
    env: TestEnv,
    meter: cpu::Meter,
    store: std::sync::Arc<etl_core::storage::ObjectStore>,
    /// The collector of `BENCH_OTLP_SINK`.
    otlp: Option<OtlpReceiver>,
}

/// The raw operations the pipeline is built on, flat out.
struct RawLimits {
    put: Phase,
    get: Phase,
    produce: Phase,
    copy: Phase,
}

/// The api's single-company imports and what they asked of S3 and the
/// broker, paced at the api's rate.
struct Ingest {
    ingest: Phase,
    put_paced: Phase,
    produce_paced: Phase,
    paced_ops: u64,
    flat_load: Option<Phase>,
    api_rss: u64,
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let machine = settings::machine();
    eprintln!("[bench] {machine}");
    let bench = Bench::new(settings).await?;
    let idle = bench.meter.idle(std::time::Duration::from_secs(5)).await;

    let raw = bench.raw_limits().await?;
    let api = ServiceProcess::api(&bench.env, &bench.knobs()).await;
    let ingested = bench.ingest(&api).await;
    let published = ingested.ingest.done + ingested.flat_load.as_ref().map_or(0, |p| p.done);

    let s = &bench.settings;
    eprintln!("[bench] processor: draining {published} files");
    let (drain, processor) =
        pipeline::processor_drain(&bench.env, &bench.meter, published, &bench.knobs()).await;
    let processor_rss = processor.peak_memory_bytes();
    let waits_per_file = pipeline::time_per_file(&processor, &drain).await;
    let files_per_transaction = pipeline::files_per_transaction(&processor).await;

    // Half of what the pipeline sustains: the issue asks for half the api
    // rate, but while the processor is the slower stage that rate would
    // only measure a growing queue.
    let e2e_rate = ingested.ingest.rate().min(drain.rate()) / 2.0;
    eprintln!(
        "[bench] end to end: {e2e_rate:.1} files/s for {} s",
        s.e2e_seconds
    );
    let e2e = bench
        .meter
        .measure(
            &[("api", api.pid()), ("processor", processor.pid())],
            pipeline::end_to_end(
                &bench.env,
                &api,
                &bench.env.id,
                s.files + 1,
                e2e_rate,
                s.e2e_seconds,
            ),
        )
        .await;
    drop(processor);
    drop(api);

    let (mut streamed, refused) = bench.api_limits().await;
    bench
        .clean_up(ingested.paced_ops, std::mem::take(&mut streamed.keys))
        .await;

    let results = Results {
        put: raw.put,
        get: raw.get,
        produce: raw.produce,
        copy: raw.copy,
        ingest: ingested.ingest,
        put_paced: ingested.put_paced,
        produce_paced: ingested.produce_paced,
        flat_load: ingested.flat_load,
        drain,
        e2e,
        e2e_rate,
        streamed,
        refused,
        idle,
        api_rss: ingested.api_rss,
        processor_rss,
        waits_per_file,
        files_per_transaction,
    };
    results.print(&bench.settings, &machine);
    results.write(&bench.settings, machine)?;
    profile::print_top();
    if let Some(sink) = &bench.otlp {
        println!("\nthe OTLP sink received {} spans", sink.received());
    }
    println!("\nwritten: target/bench/results.json");
    Ok(())
}

impl Bench {
    async fn new(mut settings: Settings) -> anyhow::Result<Self> {
        let mut env = TestEnv::new().await;
        let otlp = match std::env::var("BENCH_OTLP_SINK").as_deref() {
            Ok("1") => Some(OtlpReceiver::start_counting().await),
            _ => None,
        };
        if let Some(sink) = &otlp {
            let endpoint = sink.endpoint().to_owned();
            settings
                .knobs
                .push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
        }
        if !settings.knobs.is_empty() {
            eprintln!("[bench] service settings: {:?}", settings.knobs);
        }
        // The raw phases' clients are the services' own, with their settings.
        for (name, value) in &settings.knobs {
            env.vars.insert((*name).to_owned(), value.clone());
        }
        Ok(Self {
            meter: cpu::Meter::of_stack(&settings::stack_dir())?,
            store: limits::store(&env),
            settings,
            env,
            otlp,
        })
    }

    /// The tuning settings passed on to the services.
    fn knobs(&self) -> Vec<(&str, &str)> {
        self.settings.service_settings()
    }

    async fn raw_limits(&self) -> anyhow::Result<RawLimits> {
        let (env, meter, store) = (&self.env, &self.meter, &self.store);
        let (raw_ops, files, concurrency) = (
            self.settings.raw_ops,
            self.settings.files,
            self.settings.concurrency,
        );
        eprintln!(
            "[bench] raw limits: {raw_ops} S3 PUTs and GETs, {raw_ops} produces, {files} companies by COPY"
        );
        let flat = Pace::Flat(concurrency);
        let raw = RawLimits {
            put: meter
                .measure(&[], limits::s3_put(store, 0, raw_ops, flat))
                .await,
            get: meter
                .measure(&[], limits::s3_get(store, raw_ops, concurrency))
                .await,
            produce: meter
                .measure(&[], limits::produce(env, raw_ops, flat))
                .await,
            copy: meter
                .measure(&[], limits::pg_copy(env, files, 500, concurrency.min(8)))
                .await,
        };
        // The loaded companies must come from the processor alone.
        sqlx::query("TRUNCATE companies CASCADE")
            .execute(&env.pool)
            .await?;
        Ok(raw)
    }

    /// Single-company imports, then the same S3 and broker operations at
    /// the rate the api reached, then wrk's flat load.
    async fn ingest(&self, api: &ServiceProcess) -> Ingest {
        let (env, meter, settings) = (&self.env, &self.meter, &self.settings);
        let files = settings.files;
        eprintln!("[bench] api: {files} single-company imports");
        let recording = profile::start("api", api.pid());
        let ingest = meter
            .measure(
                &[("api", api.pid())],
                pipeline::api_ingest(api, &env.id, files, settings.concurrency),
            )
            .await;
        if let Some(recording) = recording {
            recording.finish();
        }
        let api_rss = api.peak_memory_bytes();

        // What the dependencies cost per operation at the rate the api
        // asked of them: at a lower rate there is less to batch, per record
        // and per replica fetch.
        let rate = ingest.rate();
        let paced_ops = (rate * PACED_SECONDS).round() as u64;
        eprintln!(
            "[bench] raw S3 PUTs and produces at the api's {rate:.0}/s for {PACED_SECONDS} s"
        );
        let put = limits::s3_put(&self.store, settings.raw_ops, paced_ops, Pace::Rate(rate));
        let put_paced = meter.measure(&[], put).await;
        let produce = limits::produce(env, paced_ops, Pace::Rate(rate));
        let produce_paced = meter.measure(&[], produce).await;

        let flat = &settings.flat;
        eprintln!(
            "[bench] api: wrk, {} connections for {} s",
            flat.connections, flat.seconds
        );
        let flat_load = wrk::flat_load(meter, api, &env.id, WRK_FIRST, rate, flat).await;
        Ingest {
            ingest,
            put_paced,
            produce_paced,
            paced_ops,
            flat_load,
            api_rss,
        }
    }

    /// The api's memory under large streamed uploads, and what hostile
    /// bodies cost it.
    async fn api_limits(&self) -> (Streamed, Refusals) {
        let settings = &self.settings;
        let (clients, mib) = (settings.stream_clients, settings.stream_mib);
        eprintln!("[bench] api memory: {clients} clients each stream {mib} MiB at once");
        let streamed = streaming::api_streaming(
            &self.env,
            clients,
            mib * 1024 * 1024,
            settings.stream_company_kib * 1024,
            &self.knobs(),
        )
        .await;
        eprintln!("[bench] api: hostile bodies and a good import beside them");
        let refused = refusals::hostile_bodies(&self.env, &self.knobs()).await;
        (streamed, refused)
    }

    async fn clean_up(&self, paced_ops: u64, streamed_keys: Vec<String>) {
        let objects = self.settings.raw_ops + paced_ops;
        match limits::clean_up(&self.env, &self.store, objects, streamed_keys).await {
            Ok(n) => eprintln!("[bench] deleted the run's {n} objects and its bucket"),
            Err(e) => eprintln!(
                "[bench] could not empty bucket {} ({e}); delete it by hand",
                self.store.bucket()
            ),
        }
    }
}
