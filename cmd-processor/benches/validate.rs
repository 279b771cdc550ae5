//! The processor's CPU per file: the compiled JSON Schema, the business
//! rules and the typed parse of one company document.
//! `make microbench`; numbers in docs/performance.md.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use cmd_processor::company::CompanyValidator;
use etl_testkit::{example, generated_company};

fn validate(c: &mut Criterion) {
    let validator = CompanyValidator::new();
    let valid = serde_json::to_vec(&generated_company("bench", 1)).unwrap();
    let invalid = example("invalid/schema-errors.json");
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(valid.len() as u64));
    group.bench_function("valid company", |b| {
        b.iter(|| validator.validate(&valid).expect("valid"))
    });
    group.throughput(Throughput::Bytes(invalid.len() as u64));
    group.bench_function("invalid company", |b| {
        b.iter(|| validator.validate(&invalid).expect_err("invalid"))
    });
    group.finish();
    // What building the validator costs: why it is built once, not per file.
    c.bench_function("compile the schema", |b| b.iter(CompanyValidator::new));
}

criterion_group!(benches, validate);
criterion_main!(benches);
