//! What refusing a hostile body costs the api: 300 KiB of gzip that
//! inflate past `MAX_BODY_BYTES` and a 40 MiB array of numbers, posted at
//! once with a good single-company import beside them. Goals: each refused
//! within 2 s, the good import no more than 1 s slower than alone.

use std::time::Duration;

use etl_testkit::{ServiceProcess, TestEnv, generated_company, hostile};

pub struct Refusals {
    pub bomb: Duration,
    pub numbers: Duration,
    pub good_alone: Duration,
    pub good_beside: Duration,
}

pub async fn hostile_bodies(env: &TestEnv, knobs: &[(&str, &str)]) -> Refusals {
    let api = ServiceProcess::api(env, knobs).await;
    let good = |n| serde_json::to_vec(&generated_company(&env.id, n)).expect("JSON");
    let (status, _, good_alone) = hostile::post_timed(&api, good(900_000_000), false).await;
    assert_eq!(status, 202, "the good import alone");
    let (bomb, numbers) = (
        hostile::inflating_gzip(65 << 20),
        hostile::array_of_numbers(40 << 20),
    );
    let ((bomb_status, _, bomb), (numbers_status, _, numbers), (good_status, _, good_beside)) = tokio::join!(
        hostile::post_timed(&api, bomb, true),
        hostile::post_timed(&api, numbers, false),
        hostile::post_timed(&api, good(900_000_001), false),
    );
    assert_eq!(
        (bomb_status, numbers_status, good_status),
        (413, 422, 202),
        "the inflating body, the numbers, the good import"
    );
    Refusals {
        bomb,
        numbers,
        good_alone,
        good_beside,
    }
}
