//! The api's CPU per upload: splitting a body into company documents
//! (encoding, depth and duplicate-key checks, one slice per company).
//! `make microbench`; numbers in docs/performance.md.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use cmd_api::extract::{BodyFormat, split};
use etl_testkit::generated_company;

fn bodies() -> Vec<(&'static str, usize, BodyFormat, Vec<u8>)> {
    let array = |n: u32| {
        let companies: Vec<_> = (0..n).map(|i| generated_company("bench", i)).collect();
        serde_json::to_vec(&companies).unwrap()
    };
    let ndjson = |n: u32| {
        let mut body = Vec::new();
        for i in 0..n {
            serde_json::to_writer(&mut body, &generated_company("bench", i)).unwrap();
            body.push(b'\n');
        }
        body
    };
    // Small elements: the per-element cost, not the per-byte one.
    let tiny = |n: u32, separator: &[u8]| {
        let items: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("{{\"name\":\"c{i}\"}}").into_bytes())
            .collect();
        items.join(separator)
    };
    let mut tiny_array = b"[".to_vec();
    tiny_array.extend(tiny(10_000, b","));
    tiny_array.push(b']');
    vec![
        ("one company", 1, BodyFormat::Json, array(1)),
        ("array of 1000", 1_000, BodyFormat::Json, array(1_000)),
        ("ndjson of 1000", 1_000, BodyFormat::NdJson, ndjson(1_000)),
        ("array of 10000 tiny", 10_000, BodyFormat::Json, tiny_array),
        (
            "ndjson of 10000 tiny",
            10_000,
            BodyFormat::NdJson,
            tiny(10_000, b"\n"),
        ),
    ]
}

fn split_bodies(c: &mut Criterion) {
    let mut group = c.benchmark_group("split");
    for (name, companies, format, body) in bodies() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| {
                let docs = split(body, format, 64).expect("a valid body");
                assert_eq!(docs.len(), companies);
                docs
            })
        });
    }
    group.finish();
}

criterion_group!(benches, split_bodies);
criterion_main!(benches);
