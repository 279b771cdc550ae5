//! The processor's CPU per file: the compiled JSON Schema, the business
//! rules and the read of one company document's column values.
//! `make microbench`; numbers in docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use cmd_processor::catalog::Catalog;
use etl_testkit::{example, generated_company};

fn validate(c: &mut Criterion) {
    let catalog = Catalog::built_in();
    let companies = catalog.get("companies").expect("built in");
    let valid = serde_json::to_vec(&generated_company("bench", 1)).unwrap();
    let invalid = example("companies/invalid/schema-errors.json");
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(valid.len() as u64));
    group.bench_function("valid company", |b| {
        b.iter(|| companies.read(&valid).expect("valid"))
    });
    group.throughput(Throughput::Bytes(invalid.len() as u64));
    group.bench_function("invalid company", |b| {
        b.iter(|| companies.read(&invalid).expect_err("invalid"))
    });
    group.finish();
    // What building the validator costs: why it is built once, not per file.
    c.bench_function("compile the schema", |b| b.iter(Catalog::built_in));
}

criterion_group!(benches, validate);
criterion_main!(benches);
