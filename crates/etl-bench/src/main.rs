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

use etl_testkit::{ServiceProcess, TestEnv};

use crate::run::Pace;
use crate::settings::Settings;
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

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let machine = settings::machine();
    eprintln!("[bench] {machine}");

    let mut env = TestEnv::new().await;
    if !settings.knobs.is_empty() {
        eprintln!("[bench] service settings: {:?}", settings.knobs);
    }
    // The raw phases' clients are the services' own, with their settings.
    for (name, value) in &settings.knobs {
        env.vars.insert((*name).to_owned(), value.clone());
    }
    let meter = cpu::Meter::of_stack(&settings::stack_dir())?;
    let idle = meter.idle(std::time::Duration::from_secs(5)).await;
    let store = limits::store(&env);
    let (raw_ops, files, concurrency) = (settings.raw_ops, settings.files, settings.concurrency);
    let knobs = settings.service_settings();

    eprintln!(
        "[bench] raw limits: {raw_ops} S3 PUTs and GETs, {raw_ops} produces, {files} companies by COPY"
    );
    let put = meter
        .measure(
            &[],
            limits::s3_put(&store, 0, raw_ops, Pace::Flat(concurrency)),
        )
        .await;
    let get = meter
        .measure(&[], limits::s3_get(&store, raw_ops, concurrency))
        .await;
    let produce = meter
        .measure(&[], limits::produce(&env, raw_ops, Pace::Flat(concurrency)))
        .await;
    let copy = meter
        .measure(&[], limits::pg_copy(&env, files, 500, concurrency.min(8)))
        .await;
    // The loaded companies must come from the processor alone.
    sqlx::query("TRUNCATE companies CASCADE")
        .execute(&env.pool)
        .await?;

    eprintln!("[bench] api: {files} single-company imports");
    let api = ServiceProcess::api(&env, &knobs).await;
    let recording = profile::start("api", api.pid());
    let ingest = meter
        .measure(
            &[("api", api.pid())],
            pipeline::api_ingest(&api, &env.id, files, concurrency),
        )
        .await;
    if let Some(recording) = recording {
        recording.finish();
    }
    let api_rss = api.peak_memory_bytes();

    // What the dependencies cost per operation at the rate the api asked
    // of them: at a lower rate there is less to batch, per record and per
    // replica fetch.
    let paced_ops = (ingest.rate() * PACED_SECONDS).round() as u64;
    eprintln!(
        "[bench] raw S3 PUTs and produces at the api's {:.0}/s for {PACED_SECONDS} s",
        ingest.rate()
    );
    let put_paced = meter
        .measure(
            &[],
            limits::s3_put(&store, raw_ops, paced_ops, Pace::Rate(ingest.rate())),
        )
        .await;
    let produce_paced = meter
        .measure(
            &[],
            limits::produce(&env, paced_ops, Pace::Rate(ingest.rate())),
        )
        .await;

    let flat = &settings.flat;
    eprintln!(
        "[bench] api: wrk, {} connections for {} s",
        flat.connections, flat.seconds
    );
    let flat_load = wrk::flat_load(&meter, &api, &env.id, WRK_FIRST, ingest.rate(), flat).await;
    let published = ingest.done + flat_load.as_ref().map_or(0, |p| p.done);

    eprintln!("[bench] processor: draining {published} files");
    let (drain, processor) = pipeline::processor_drain(&env, &meter, published, &knobs).await;
    let processor_rss = processor.peak_memory_bytes();
    let waits_per_file = pipeline::time_per_file(&processor, &drain).await;
    let files_per_transaction = pipeline::files_per_transaction(&processor).await;

    // Half of what the pipeline sustains: the issue asks for half the api
    // rate, but while the processor is the slower stage that rate would
    // only measure a growing queue.
    let e2e_rate = ingest.rate().min(drain.rate()) / 2.0;
    let e2e_seconds = settings.e2e_seconds;
    eprintln!("[bench] end to end: {e2e_rate:.1} files/s for {e2e_seconds} s");
    let e2e = meter
        .measure(
            &[("api", api.pid()), ("processor", processor.pid())],
            pipeline::end_to_end(&env, &api, &env.id, files + 1, e2e_rate, e2e_seconds),
        )
        .await;
    drop(processor);
    drop(api);

    let (clients, mib) = (settings.stream_clients, settings.stream_mib);
    eprintln!("[bench] api memory: {clients} clients each stream {mib} MiB at once");
    let mut streamed = streaming::api_streaming(
        &env,
        clients,
        mib * 1024 * 1024,
        settings.stream_company_kib * 1024,
        &knobs,
    )
    .await;

    eprintln!("[bench] api: hostile bodies and a good import beside them");
    let refused = refusals::hostile_bodies(&env, &knobs).await;

    let streamed_keys = std::mem::take(&mut streamed.keys);
    match limits::clean_up(&env, &store, raw_ops + paced_ops, streamed_keys).await {
        Ok(n) => eprintln!("[bench] deleted the run's {n} objects and its bucket"),
        Err(e) => eprintln!(
            "[bench] could not empty bucket {} ({e}); delete it by hand",
            store.bucket()
        ),
    }

    let results = Results {
        put,
        get,
        produce,
        copy,
        ingest,
        put_paced,
        produce_paced,
        flat_load,
        drain,
        e2e,
        e2e_rate,
        streamed,
        refused,
        idle,
        api_rss,
        processor_rss,
        waits_per_file,
        files_per_transaction,
    };
    results.print(&settings, &machine);
    results.write(&settings, machine)?;
    profile::print_top();
    println!("\nwritten: target/bench/results.json");
    Ok(())
}
